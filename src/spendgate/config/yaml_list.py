"""The config's long ``budgets:`` list, read by its text: a fast route for the one part of
a config that can be 100,000 entries long, taken only where the text proves it means what
PyYAML would read.

libyaml parses such a list (8 MB, a million scalars) quickly, but PyYAML hands each of its
1.2 million events to Python as an object: about a second for the events alone. A list
written as tools write it, one flat mapping per entry, each with the same keys in the same
order and a single-line scalar per key::

    budgets:
    - name: user-1
      scope: user
      limit_usd: '1000'

is cut out here: the first entry gives the keys and the text before each scalar, and one
regular expression of exactly those lines captures every entry, in C (0.05 s for
100,000), the scalars of a column that starts with text captured as text. `yaml_text`
parses the rest of the document with PyYAML (the list replaced by ``budgets: []``) and
resolves any other scalar with PyYAML's own resolver and constructors.

What is taken is narrow on purpose. ``budgets:`` must open a line at the top level, once
in the text, with nothing after it; every line of the list must be an entry's line, at
one indentation: ``- key: value`` to open an entry, ``  key: value`` under it; the first
line after the list that is neither blank nor a comment must start a token at column 0
that is not ``-`` (so the list and every mapping in it are closed there, in the document
as in the one with ``budgets: []``). A value is a plain scalar on one line with no
indicator at its start, no ``: `` or `` #`` in it and no space at its end, or a quoted
one with no escape and no line break. Anything else (a comment or a blank line inside
the list, a nested list, an anchor, an alias, a tag, a key of an entry given twice,
entries with different keys, a tab, a character libyaml would refuse) declines, and the
whole document is read by PyYAML as before.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache

KEY = "budgets"
_HEADER = re.compile(KEY + r":[ ]*\n")
_PLACEHOLDER = KEY + ": []\n"
# the start of the line after the list: neither an entry's line nor indented
_LIST_END = re.compile(r"\n(?![ ]|- )")
_BLANK_OR_COMMENT = re.compile(r"(?:[ ]*(?:#[^\n\r\x85\u2028\u2029]*)?\n)*")
# a token at column 0 that closes every block collection opened after the key
_CLOSING = re.compile(r"[^\s#\-\ufeff]")
_ENTRY_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*): ")

# Characters a scalar may hold here: printable ASCII but for YAML's indicators and
# quotes, and the printable characters of the Basic Multilingual Plane that libyaml takes.
# Patterns, compiled (and kept by `re`) when a long list is first read.
# Written as what is left out (controls, C1 controls with NEL, the line and paragraph
# separators, the byte order mark, non-characters, surrogates, other planes): a class of
# a few ranges compiles in well under a millisecond, one of the BMP's ranges in 8 ms.
_NEVER = r"\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff\ud800-\udfff\U00010000-\U0010ffff"
_NOT_PLAIN = r" \"#',:\[\\\]`{}" + _NEVER  # with the controls, below
# a plain scalar's characters; its first: no indicator (- ? : , [ ] { } # & * ! | > ' " % @ `)
SAFE = rf"[^\x00-\x1f{_NOT_PLAIN}]"
_FIRST = rf"[^\x00-\x1f{_NOT_PLAIN}!%&*\-?@|>]"
_MORE = rf"(?:{SAFE}|:(?={SAFE})|[ ]+(?={SAFE}))*"
PLAIN = rf"(?:{_FIRST}|-(?={SAFE})){_MORE}"
# a quoted scalar's characters: no line break, no backslash, not its own quote
_SINGLE = rf"[^\x00-\x1f'\\{_NEVER}]"
_DOUBLE = rf'[^\x00-\x1f"\\{_NEVER}]'
SINGLE = rf"'((?:{_SINGLE}|'')*)'"
DOUBLE = rf'"({_DOUBLE}*)"'
_OUTSIDE = rf"[\x00-\x09\x0b-\x1f{_NOT_PLAIN}]"  # not SAFE, not a line break
_ANY = r"([^\n]*)"  # a scalar as written, to be checked and resolved


@cache
def text_starts(patterned: str) -> re.Pattern[str]:
    """What, after a line break, starts a scalar that is not text as written: no plain
    scalar's first character, or one of ``patterned`` (the first characters of the
    resolver's patterns: digits, ``y``, ``n``, ``~``, ...)."""
    return re.compile(rf"\n(?:(?!{_FIRST})|(?=[{re.escape(patterned)}]))")


def all_text(tokens: Sequence[str], starts: re.Pattern[str]) -> bool:
    """Whether every token is a plain scalar of one word (no space, no colon) that the
    resolver leaves text: names and members, checked in C."""
    joined = "\n".join(tokens)
    if ":" in joined or " " in joined or re.search(_OUTSIDE, joined):
        return False
    return starts.search("\n" + joined) is None


@dataclass(frozen=True)
class LongList:
    """``rest``: the document with the list replaced by ``budgets: []``, the key on line
    ``line`` (from 0) at column 0; ``keys``: each entry's keys, as written; ``rows``: each
    entry's scalars, in the keys' order: text (the content of a quoted scalar, or a plain
    word the resolver leaves text) except in the columns ``raw`` names, which hold each
    scalar as written, quotes included, to be checked and resolved."""

    rest: str
    line: int
    keys: tuple[str, ...]
    rows: list[tuple[str, ...]]
    raw: tuple[int, ...]


def long_list(text: str, patterned: str | None) -> LongList | None:
    """The list cut out of ``text``, or None where it is not written as described above.
    ``patterned``: the first characters of the resolver's patterns (None: it has a pattern
    for any text)."""
    head = _header(text)
    if head is None:
        return None
    start = _HEADER.match(text, head)
    if start is None:
        return None
    ends = _LIST_END.search(text, start.end() - 1)
    if ends is None:
        return None  # the list runs to the end without a line break after it
    end = ends.start() + 1
    after = _BLANK_OR_COMMENT.match(text, end)  # it matches, if only the empty text
    following = end if after is None else after.end()
    if end == start.end() or (following < len(text) and not _CLOSING.match(text, following)):
        return None
    found = _entries(text, start.end(), end, patterned)
    if found is None:
        return None
    rest = text[:head] + _PLACEHOLDER + text[end:]
    return LongList(rest, text.count("\n", 0, head), *found)


def _header(text: str) -> int | None:
    """Where the one line that starts with ``budgets:`` starts."""
    marker = "\n" + KEY + ":"
    if text.count(marker) + text.startswith(marker[1:]) != 1:
        return None
    return 0 if text.startswith(marker[1:]) else text.index(marker) + 1


def _entries(
    text: str, begin: int, end: int, patterned: str | None
) -> tuple[tuple[str, ...], list[tuple[str, ...]], tuple[int, ...]] | None:
    """Each entry's keys and the pattern of its lines, from the first entry; then every
    entry, by that pattern, which must cover every line from ``begin`` to ``end``. A
    column whose first scalar is text is first tried as text all down (the pattern checks
    it), else as written."""
    first = _first_entry(text, begin, end)
    if first is None:
        return None
    keys, prefixes, tokens = first
    if len(set(keys)) != len(keys):
        return None  # a key given twice: PyYAML's route names it
    lines = text.count("\n", begin, end)
    groups = [_group(token, patterned) for token in tokens]
    for attempt in (groups, [_ANY] * len(groups)):
        pattern = "^" + "".join(
            re.escape(p) + g + r"\n" for p, g in zip(prefixes, attempt, strict=True)
        )
        found = re.compile(pattern, re.M).findall(text, begin, end)
        # each match is one entry's lines, from a line's start: together, every line
        if len(found) * len(prefixes) == lines:
            rows = found if len(prefixes) > 1 else list(zip(found))
            return keys, rows, tuple(i for i, group in enumerate(attempt) if group == _ANY)
    return None


def _first_entry(
    text: str, begin: int, end: int
) -> tuple[tuple[str, ...], list[str], list[str]] | None:
    """The first entry's keys, and its lines, each as the text before its scalar and
    the scalar."""
    indent = _indent(text, begin)
    opening, under = " " * indent + "- ", " " * (indent + 2)
    keys: list[str] = []
    prefixes: list[str] = []
    tokens: list[str] = []
    position = begin
    while position < end:
        line = text[position : text.index("\n", position)]
        if prefixes and line.startswith(opening):
            break
        lead = under if prefixes else opening
        key = _ENTRY_KEY.match(line, len(lead)) if line.startswith(lead) else None
        if key is None:
            return None
        keys.append(key.group(1))
        prefixes.append(line[: key.end()])
        tokens.append(line[key.end() :])
        position += len(line) + 1
    return tuple(keys), prefixes, tokens


def _group(token: str, patterned: str | None) -> str:
    """The pattern that captures a column like its first scalar, as text."""
    if patterned is not None and all_text((token,), text_starts(patterned)):
        return rf"((?![{re.escape(patterned)}]){_FIRST}{SAFE}*)"
    if "''" not in token and re.fullmatch(SINGLE, token):
        return rf"'({_SINGLE}*)'"
    if re.fullmatch(DOUBLE, token):
        return rf'"({_DOUBLE}*)"'
    return _ANY


def _indent(text: str, begin: int) -> int:
    spaces = begin
    while text.startswith(" ", spaces):
        spaces += 1
    return spaces - begin
