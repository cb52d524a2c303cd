"""The config file's YAML, read into plain Python values: what ``yaml.safe_load`` gives,
with a key given twice in one mapping refused (YAML would keep the last one silently: a
second ``gpt-4o:`` would move the model to another provider).

Built for size: a config may list 100,000 budgets (8 MB of YAML, a million scalars).
``yaml.safe_load`` parses in pure Python, builds a node for every scalar and collection,
then constructs the values from the nodes: 42 s of CPU for such a file, and 450 MB of
nodes alive at once. Here libyaml parses (where PyYAML was built with it, as its wheels
are) and a plain document (mappings, lists and scalars, no anchor, alias, merge key or
explicit collection tag) is built straight from its parser events: the same resolver and
the same scalar constructors, no node tree. Any other document is composed into nodes and
constructed by PyYAML as ``safe_load`` does; a document libyaml refuses is parsed again by
the pure-Python parser, whose error messages (line, column, what was expected) are the
ones documented and tested.
"""

from __future__ import annotations

from typing import Any

import yaml

from spendgate.errors import ConfigError
from spendgate.text import escape

_FAST_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_SPECIAL_KEYS = ("tag:yaml.org,2002:merge", "tag:yaml.org,2002:value")
_IMPLICIT = (None, "!")  # no tag given: the resolver decides
_IMPLICIT_SEQ = (*_IMPLICIT, _SEQ)
_IMPLICIT_MAP = (*_IMPLICIT, _MAP)
# libyaml's check_event compares exact classes: CollectionStartEvent would match nothing
_COLLECTIONS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)


def key_path(location: tuple[int | str, ...]) -> str:
    """``budgets[3].name`` for ``("budgets", 3, "name")``."""
    parts: list[str] = []
    for item in location:
        if isinstance(item, int):
            parts.append(f"[{item}]")
        elif parts:
            parts.append(f".{escape(item)}")
        else:
            parts.append(escape(str(item)))
    return "".join(parts)


def parse_yaml(source: str, text: str) -> Any:
    """The document's data; `ConfigError` for a duplicate key, ``yaml.YAMLError`` for
    text that is not one YAML document."""
    try:
        try:
            return _from_events(_FAST_LOADER(text), source)
        except _Unusual:
            return _from_nodes(_FAST_LOADER(text), source)
    except yaml.YAMLError:
        if _FAST_LOADER is yaml.SafeLoader:  # pragma: no cover - PyYAML without libyaml
            raise
        return _from_nodes(yaml.SafeLoader(text), source)


class _Unusual(Exception):
    """The document uses what only PyYAML's composer and constructor handle."""


def _from_events(loader: Any, source: str) -> Any:
    # ``Any``: PyYAML's event API (get_event, check_event, resolve) carries no types
    try:
        loader.get_event()  # the stream's start
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # the document's start
        value = _Builder(loader, source).value(())
        loader.get_event()  # the document's end
        if not loader.check_event(yaml.StreamEndEvent):
            raise _Unusual  # a second document: PyYAML's error says where
        return value
    finally:
        loader.dispose()


class _Every:
    def __contains__(self, item: object) -> bool:
        return True


_EVERY = _Every()  # a resolver with patterns for any text: ask it of every scalar


class _Builder:
    """Values from the parser's events; ``known``: the untagged scalars met before, by
    text and whether plain (a config repeats most of its scalars: keys, scopes, periods,
    limits), with the value and tag they gave, every one immutable (text, numbers,
    booleans, null, dates), so resolved and constructed once."""

    def __init__(self, loader: Any, source: str) -> None:
        self.loader = loader
        self.source = source
        self.known: dict[tuple[str, bool], tuple[Any, str]] = {}
        # the first characters the resolver has patterns for (digits, y/n/t/f/o, ~, ...):
        # a plain scalar that starts with another is text, as PyYAML's resolver finds
        resolvers = loader.yaml_implicit_resolvers
        plain = None not in resolvers and not loader.yaml_path_resolvers
        self.patterned: Any = resolvers if plain else _EVERY

    def value(self, location: tuple[int | str, ...]) -> Any:
        loader = self.loader
        event = loader.get_event()
        kind = type(event)
        if kind is yaml.ScalarEvent:
            if event.anchor is not None:
                raise _Unusual  # PyYAML shares one object between an anchor and its aliases
            return self.scalar(event)[0]
        if kind is yaml.AliasEvent or event.anchor is not None:
            raise _Unusual
        if kind is yaml.SequenceStartEvent and event.tag in _IMPLICIT_SEQ:
            items: list[Any] = []
            while not loader.check_event(yaml.SequenceEndEvent):
                nested = loader.check_event(*_COLLECTIONS)
                items.append(self.value((*location, len(items)) if nested else ()))
            loader.get_event()
            return items
        if kind is yaml.MappingStartEvent and event.tag in _IMPLICIT_MAP:
            return self.mapping(location)
        raise _Unusual

    def mapping(self, location: tuple[int | str, ...]) -> Any:
        loader = self.loader
        mapping: dict[Any, Any] = {}
        lines: dict[str, int] = {}
        while not loader.check_event(yaml.MappingEndEvent):
            event = loader.get_event()
            if type(event) is not yaml.ScalarEvent or event.anchor is not None:
                raise _Unusual  # a key that is a collection or an anchor
            key, tag = self.scalar(event)
            if tag in _SPECIAL_KEYS:
                raise _Unusual  # a merge key (<<)
            name = str(event.value)
            mark: Any = event.start_mark
            line = mark.line + 1
            if name in lines:
                raise _duplicate(self.source, (*location, name), line, lines[name])
            lines[name] = line
            nested = loader.check_event(*_COLLECTIONS)
            mapping[key] = self.value((*location, name) if nested else ())
        loader.get_event()
        return mapping

    def scalar(self, event: Any) -> tuple[Any, str]:
        """A scalar's value and tag, resolved and constructed as PyYAML's composer and
        constructor do."""
        tag = event.tag
        if tag not in _IMPLICIT:
            return self.constructed(event, tag)
        text, plain = event.value, event.implicit[0]
        if plain and text[:1] not in self.patterned:
            return text, _STR  # most of a long list's names and members
        found = self.known.get((text, plain))
        if found is None:
            tag = self.loader.resolve(yaml.ScalarNode, text, event.implicit)
            found = self.known[text, plain] = self.constructed(event, tag)
        return found

    def constructed(self, event: Any, tag: str) -> tuple[Any, str]:
        if tag == _STR:
            return event.value, tag
        node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
        return self.loader.construct_object(node), tag  # numbers, booleans, null, dates


def _from_nodes(loader: yaml.SafeLoader, source: str) -> Any:
    """``yaml.safe_load``, with its nodes checked for duplicate keys first."""
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(source, node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(
    source: str, node: yaml.Node | None, location: tuple[int | str, ...] = ()
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
            if key is None or key_node.tag == "tag:yaml.org,2002:merge":
                _refuse_duplicate_keys(source, value_node, location)
                continue
            line = key_node.start_mark.line + 1
            if key in seen:
                raise _duplicate(source, (*location, key), line, seen[key])
            seen[key] = line
            if not isinstance(value_node, yaml.ScalarNode):
                _refuse_duplicate_keys(source, value_node, (*location, key))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            if not isinstance(item, yaml.ScalarNode):
                _refuse_duplicate_keys(source, item, (*location, index))


def _duplicate(source: str, location: tuple[int | str, ...], line: int, first: int) -> ConfigError:
    return ConfigError(
        source,
        key_path(location),
        f"duplicate key at line {line} (first at line {first}); YAML would "
        "silently keep the last one: remove or rename one of them",
    )
