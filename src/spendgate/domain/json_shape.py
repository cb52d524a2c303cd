"""How big a parsed JSON document is as a structure: how many objects and arrays it holds
and how deeply they nest. Pure; one iterative walk, no recursion (a document nested
thousands deep must not exhaust the interpreter's stack)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Shape:
    containers: int  # objects and arrays, the document itself included
    depth: int  # how many of them nest at the deepest point (a flat object: 1)


def shape(value: Any) -> Shape:
    """The shape of ``value`` (a document as `orjson.loads` returns it)."""
    if type(value) is not dict and type(value) is not list:
        return Shape(0, 0)
    containers, deepest = 0, 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        containers += 1
        if depth > deepest:
            deepest = depth
        for child in node.values() if type(node) is dict else node:
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
    return Shape(containers, deepest)


def containers_at_most(raw: bytes) -> int:
    """An upper bound of the objects and arrays a JSON text holds, without parsing it: its
    opening brackets, those inside strings included (a C-speed scan of the bytes)."""
    return raw.count(b"{") + raw.count(b"[")
