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

Even so, handing libyaml's events to Python costs about 1 µs each: 1 s for 100,000
budgets. A long ``budgets:`` list written as tools write it is therefore read by its text
(`spendgate.config.yaml_list`, `parse_long_list`: 0.13 s), the rest of the document as
above; where anything in it is not provably read the same, the whole document is.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import yaml

from spendgate.config.yaml_list import (
    DOUBLE,
    KEY,
    PLAIN,
    SINGLE,
    LongList,
    all_text,
    long_list,
    text_starts,
)
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
# the tags YAML 1.1's implicit resolvers give that construct an immutable scalar
_SCALAR_TAGS = frozenset(
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
)
_RESOLVERS = _FAST_LOADER.yaml_implicit_resolvers
# a column of plain scalars none of the resolver's patterns starts: text as written
_PATTERNED = None if None in _RESOLVERS else "".join(filter(None, _RESOLVERS))
# a document this long or longer may hold a long list (100,000 budgets: 8.4 MB); a shorter
# one is read whole, as fast (a few hundred budgets: milliseconds)
_LONG = 64 * 1024


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
    data, listed = parse_yaml_apart(source, text)
    if listed is not None:
        data[KEY] = listed.entries()
    return data


@dataclass(frozen=True)
class ListedBudgets:
    """A long ``budgets:`` list's entries by columns: each entry's ``keys`` and, for each
    key, its values in the entries' order, as PyYAML reads them."""

    keys: tuple[str, ...]
    columns: tuple[Sequence[Any], ...]

    def entries(self) -> list[dict[str, Any]]:
        """The list as PyYAML gives it: a mapping per entry."""
        rows = zip(*self.columns, strict=True)
        return list(map(dict, map(zip, repeat(self.keys), rows)))


def parse_yaml_apart(source: str, text: str) -> tuple[Any, ListedBudgets | None]:
    """`parse_yaml`'s data and None; or, for a document whose long ``budgets:`` list is
    read by its text, the data with ``budgets: []`` and the list by columns (validated by
    columns without a mapping per entry first: 0.08 s of 100,000 budgets)."""
    found = _apart(source, text) if len(text) >= _LONG else None
    return (parse_whole(source, text), None) if found is None else found


def parse_whole(source: str, text: str) -> Any:
    """`parse_yaml` without the route for a long ``budgets:`` list: every document."""
    try:
        try:
            return _from_events(_FAST_LOADER(text), source)
        except _Unusual:
            return _from_nodes(_FAST_LOADER(text), source)
    except yaml.YAMLError:
        if _FAST_LOADER is yaml.SafeLoader:  # pragma: no cover - PyYAML without libyaml
            raise
        return _from_nodes(yaml.SafeLoader(text), source)


def parse_long_list(source: str, text: str) -> Any:
    """What `parse_whole` gives, for a document whose long ``budgets:`` list is written
    as `spendgate.config.yaml_list` takes it; None (declined) for any other document, and
    for one `parse_whole` would refuse (read whole, it gives the error and its message)."""
    found = _apart(source, text)
    if found is None:
        return None
    data, listed = found
    data[KEY] = listed.entries()
    return data


def _apart(source: str, text: str) -> tuple[Any, ListedBudgets] | None:
    listed = None if _FAST_LOADER.yaml_path_resolvers else long_list(text, _PATTERNED)
    return None if listed is None else _with_long_list(listed, source)


def _with_long_list(listed: LongList, source: str) -> tuple[Any, ListedBudgets] | None:
    """The document with its long list read by columns (`spendgate.config.yaml_list`),
    or None: declined, to be read whole. The rest is read as any document is, nodes and
    duplicate keys included, and must hold ``budgets: []`` where the list was, a key of
    the top mapping that nothing else refers to (no alias or merge of that mapping copies
    it), so that only that value differs from the whole document's reading."""
    loader = _FAST_LOADER(listed.rest)
    try:
        node = loader.get_single_node()
        if not _holds_placeholder(node, listed.line):
            return None
        _refuse_duplicate_keys(source, node)
        data = loader.construct_document(node)
        entries = _entries(loader, listed)
    except (yaml.YAMLError, ConfigError, ArithmeticError, ValueError, RecursionError):
        return None  # the whole document read again gives the error and its message
    finally:
        loader.dispose()
    return None if entries is None else (data, entries)


def _holds_placeholder(node: yaml.Node | None, line: int) -> bool:
    if not isinstance(node, yaml.MappingNode) or node.flow_style or _refers_to_itself(node):
        return False
    for key, value in node.value:
        mark = key.start_mark
        if (mark.line, mark.column) == (line, 0):
            return (
                isinstance(key, yaml.ScalarNode)
                and (key.tag, key.style or None, key.value) == (_STR, None, KEY)
                and isinstance(value, yaml.SequenceNode)
                and (value.tag, value.flow_style, value.value) == (_SEQ, True, [])
                and (value.start_mark.line, value.start_mark.column) == (line, len(KEY) + 2)
            )
    return False


def _refers_to_itself(root: yaml.Node) -> bool:
    """Whether an alias inside the mapping names it (a copy of it, merged or aliased,
    would hold the list)."""
    seen: set[int] = set()
    pending: list[yaml.Node] = [root]
    while pending:
        node = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            children = [item for pair in node.value for item in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        else:
            continue
        if any(child is root for child in children):
            return True
        pending.extend(children)
    return False


def _entries(loader: Any, listed: LongList) -> ListedBudgets | None:
    keys = tuple(_token(loader, key) for key in listed.keys)
    if not all(isinstance(key, str) for key in keys):
        return None  # a key YAML 1.1 reads as a boolean, a number, null: not a budget's
    columns: list[Sequence[Any]] = list(zip(*listed.rows, strict=True))
    for index in listed.raw:
        values = _column(loader, columns[index])
        if values is None:
            return None
        columns[index] = values
    return ListedBudgets(keys, tuple(columns))


def _column(loader: Any, tokens: Sequence[Any]) -> Sequence[Any] | None:
    """Each scalar's value, each distinct one resolved once; None for one not taken."""
    if _PATTERNED is not None and all_text(tokens, text_starts(_PATTERNED)):
        return tokens  # names, members: text as written
    table: dict[str, Any] = {}
    for token in set(tokens):
        value = table[token] = _token(loader, token)
        if value is _NOT_TAKEN:
            return None
    return list(map(table.__getitem__, tokens))


_NOT_TAKEN = object()


def _token(loader: Any, token: str) -> Any:
    """A scalar's value as PyYAML's resolver and constructors give it, or `_NOT_TAKEN`."""
    if re.fullmatch(PLAIN, token):
        text, style, implicit = token, None, (True, False)
    elif quoted := re.fullmatch(SINGLE, token):
        text, style, implicit = quoted.group(1).replace("''", "'"), "'", (False, True)
    elif quoted := re.fullmatch(DOUBLE, token):
        text, style, implicit = quoted.group(1), '"', (False, True)
    else:
        return _NOT_TAKEN
    tag = loader.resolve(yaml.ScalarNode, text, implicit)
    if tag == _STR:
        return text
    if tag not in _SCALAR_TAGS:
        return _NOT_TAKEN  # a merge key (<<), a value key (=)
    return loader.construct_object(yaml.ScalarNode(tag, text, None, None, style))


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
