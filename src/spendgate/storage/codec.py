"""Reservations as text: the worst case, the lapse template and the counters a reservation
holds, for any backend that stores a reservation in a column or a key (SQLite, Redis).

Templates are stored by field name, so a reservation made before an upgrade still loads
after it; fields that hold their blank are left out (a template is mostly blanks: no usage
yet, and written whole it would not fit in a SQLite b-tree cell).
"""

from __future__ import annotations

import dataclasses
import json
import operator
from typing import Any

import orjson

from spendgate.clock import from_ms, to_ms
from spendgate.domain.admission import WorstCase
from spendgate.domain.ledger import LedgerRow
from spendgate.storage.base import StoredCounter

_WORST_FIELDS = tuple(f.name for f in dataclasses.fields(WorstCase))
_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(LedgerRow))
_row_values = operator.attrgetter(*_ROW_FIELDS)

# What a row's field holds when it says nothing: its default, or for a field without one
# None (if it may be None) or the zero of its type. A template leaves such fields out and
# gets them back on loading; a field with no known blank (``ts``) is always stored.
_NO_BLANK = object()
_ZEROS: dict[str, object] = {
    "int": 0,
    "float": 0.0,
    "bool": False,
    "str": "",
    "tuple[str, ...]": (),
}


def _blank(field: dataclasses.Field[Any]) -> object:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if "None" in kind.split(" | "):
        return None
    return _ZEROS.get(kind, _NO_BLANK)


_ROW_BLANKS = tuple(_blank(f) for f in dataclasses.fields(LedgerRow))
_ROW_TUPLES = tuple(
    name for name, blank in zip(_ROW_FIELDS, _ROW_BLANKS, strict=True) if blank == ()
)


def dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def dump_worst(worst: WorstCase) -> str:
    return orjson.dumps(worst).decode()  # a dataclass: an object by field name


def load_worst(text: str | bytes) -> WorstCase:
    values: dict[str, Any] = orjson.loads(text)
    return WorstCase(**{name: values[name] for name in _WORST_FIELDS})


def dump_template(row: LedgerRow) -> str:
    return dumps(_template_values(row))


def dump_template_exact(row: LedgerRow) -> str:
    """`dump_template` for a row orjson cannot write (an integer past 64 bits): the
    standard library writes every integer exactly (`load_template` would read such a one
    back as a float; this is for a record kept aside, not for reading back)."""
    return json.dumps(_template_values(row), separators=(",", ":"))


def _template_values(row: LedgerRow) -> dict[str, Any]:
    values = {
        name: value
        for name, value, blank in zip(_ROW_FIELDS, _row_values(row), _ROW_BLANKS, strict=True)
        if value is not blank and (type(value) is not type(blank) or value != blank)
    }
    values["ts"] = to_ms(row.ts)
    return values


def load_template(text: str | bytes) -> LedgerRow:
    """Reads what `dump_template` wrote, and the full templates of earlier versions."""
    stored: dict[str, Any] = orjson.loads(text)
    values: dict[str, Any] = {}
    for name, blank in zip(_ROW_FIELDS, _ROW_BLANKS, strict=True):
        if name in stored:
            values[name] = stored[name]
        elif blank is not _NO_BLANK:
            values[name] = blank
    values["ts"] = from_ms(values["ts"])
    for name in _ROW_TUPLES:  # JSON arrays back to tuples, the pairs (`tool_calls`) too
        values[name] = tuple(tuple(v) if type(v) is list else v for v in values[name])
    return LedgerRow(**values)


def load_counters(text: str | bytes) -> tuple[StoredCounter, ...]:
    return tuple(tuple(item) for item in orjson.loads(text))
