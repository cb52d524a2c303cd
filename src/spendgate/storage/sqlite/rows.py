"""How keys and ledger rows map to SQLite columns, and the statements that use them."""

from __future__ import annotations

import dataclasses
import json
import operator
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from spendgate.clock import from_ms, to_ms
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.storage.base import GroupBy

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")

# ---------------------------------------------------------------------------- conversions
# Columns carry the dataclass field names, in field order: a field added to ApiKey or
# LedgerRow without a migration fails loudly on the first insert.


def _opt_ms(moment: datetime | None) -> int | None:
    return None if moment is None else to_ms(moment)


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else from_ms(value)


def _dump_strs(values: tuple[str, ...]) -> str:
    return json.dumps(list(values), separators=(",", ":")) if values else "[]"


def _load_strs(text: str) -> tuple[str, ...]:
    if text == "[]":  # the common case on the hot path: skip the parser
        return ()
    values: list[str] = json.loads(text)
    return tuple(values)


def _dump_metadata(metadata: dict[str, str]) -> str:
    return json.dumps(metadata, sort_keys=True, separators=(",", ":")) if metadata else "{}"


def _load_metadata(text: str) -> dict[str, str]:
    if text == "{}":
        return {}
    metadata: dict[str, str] = json.loads(text)
    return metadata


Codec = dict[str, Callable[[Any], Any]]


class _RowCodec(Generic[R]):
    """Turns a frozen dataclass into SQL parameters and back, field by field.

    Only the fields named in ``encode``/``decode`` are converted; the rest (text, integers,
    floats, None) pass through as SQLite stores them. Booleans bind as 0/1 natively.
    """

    def __init__(self, cls: type[R], encode: Codec, decode: Codec) -> None:
        self.cls = cls
        self.fields = tuple(f.name for f in dataclasses.fields(cls))
        self.columns = ", ".join(f'"{name}"' for name in self.fields)
        self.placeholders = ", ".join("?" * len(self.fields))
        self._values = operator.attrgetter(*self.fields)
        self._encode = [(i, encode[n]) for i, n in enumerate(self.fields) if n in encode]
        self._decode = [(i, decode[n]) for i, n in enumerate(self.fields) if n in decode]

    def params(self, item: R) -> list[Any]:
        values = list(self._values(item))
        for index, convert in self._encode:
            values[index] = convert(values[index])
        return values

    def load(self, row: tuple[Any, ...]) -> R:
        values = list(row)
        for index, convert in self._decode:
            values[index] = convert(values[index])
        return self.cls(*values)


KEYS = _RowCodec(
    ApiKey,
    encode={
        "created_at": to_ms,
        "expires_at": _opt_ms,
        "revoked_at": _opt_ms,
        "tags": _dump_strs,
        "allowed_models": _dump_strs,
        "metadata": _dump_metadata,
    },
    decode={
        "created_at": from_ms,
        "expires_at": _opt_dt,
        "revoked_at": _opt_dt,
        "tags": _load_strs,
        "allowed_models": _load_strs,
        "metadata": _load_metadata,
    },
)


# Keys whose last decoded row is kept (`DecodedKeys`); past it, all are dropped.
DECODED_KEYS = 1_024


class DecodedKeys:
    """The key of a row read just now: the one decoded last time when the row is the same,
    field for field (decoding its times and JSON is most of a lookup's Python; the row
    itself is read every time, so a changed key is never missed). SQLite and PostgreSQL."""

    def __init__(self) -> None:
        # key hash -> (the row as last read, the key decoded from it)
        self._decoded: dict[str, tuple[tuple[object, ...], ApiKey]] = {}

    def of(self, key_hash: str, row: tuple[object, ...] | None) -> ApiKey | None:
        if row is None:
            self._decoded.pop(key_hash, None)
            return None
        seen = self._decoded.get(key_hash)
        if seen is not None and seen[0] == row:
            return seen[1]
        key = KEYS.load(row)
        if len(self._decoded) >= DECODED_KEYS:
            self._decoded.clear()
        self._decoded[key_hash] = (row, key)
        return key


def _dump_counts(values: tuple[tuple[str, int], ...]) -> str:
    return json.dumps([list(pair) for pair in values], separators=(",", ":")) if values else "[]"


def _load_counts(text: str) -> tuple[tuple[str, int], ...]:
    if text == "[]":
        return ()
    pairs: list[list[Any]] = json.loads(text)
    return tuple((str(name), int(count)) for name, count in pairs)


LEDGER = _RowCodec(
    LedgerRow,
    encode={
        "ts": to_ms,
        "tags": _dump_strs,
        "shadow_blocks": _dump_strs,
        "settled_above": _dump_strs,
        "tool_calls": _dump_counts,
    },
    decode={
        "ts": from_ms,
        "tags": _load_strs,
        "shadow_blocks": _load_strs,
        "settled_above": _load_strs,
        "tool_calls": _load_counts,
        "streamed": bool,
        "client_disconnected": bool,
        "usage_estimated": bool,
        "unreconciled": bool,
    },
)


def key_update_params(key: ApiKey) -> list[Any]:
    """`UPDATE_KEY` sets every column but the id, which comes last, in WHERE."""
    params = KEYS.params(key)
    return [*params[1:], params[0]]


# ---------------------------------------------------------------------------- statements
# Table and column names below come from the codecs and the fixed table of groupings,
# never from input (hence the S608 waivers).

INSERT_KEY = f"INSERT INTO api_keys ({KEYS.columns}) VALUES ({KEYS.placeholders})"  # noqa: S608
UPDATE_KEY = "UPDATE api_keys SET {} WHERE id = ?".format(  # noqa: S608
    ", ".join(f'"{name}" = ?' for name in KEYS.fields[1:])
)
SELECT_KEYS = f"SELECT {KEYS.columns} FROM api_keys"  # noqa: S608
KEY_BY_HASH = f"{SELECT_KEYS} WHERE key_hash = ?"
KEY_BY_ID = f"{SELECT_KEYS} WHERE id = ?"
LIST_KEYS = f"{SELECT_KEYS} ORDER BY created_at, id"
LIST_ACTIVE_KEYS = (
    f"{SELECT_KEYS} WHERE revoked_at IS NULL OR revoked_at > ? ORDER BY created_at, id"
)
INSERT_LEDGER = f"INSERT INTO ledger ({LEDGER.columns}) VALUES ({LEDGER.placeholders})"  # noqa: S608
# Idempotent by request id (and by nothing else: any other failure still raises).
INSERT_LEDGER_IF_NEW = INSERT_LEDGER + " ON CONFLICT (request_id) DO NOTHING"
LEDGER_ROW = f"SELECT {LEDGER.columns} FROM ledger WHERE request_id = ?"  # noqa: S608
LEDGER_RANGE = (
    f"SELECT {LEDGER.columns} FROM ledger "  # noqa: S608
    "WHERE ts >= ? AND ts < ? ORDER BY ts, id LIMIT ?"
)

KEY_LATEST = (
    f"SELECT {LEDGER.columns} FROM ledger "  # noqa: S608
    "WHERE key_id = ? ORDER BY ts DESC, id DESC LIMIT ?"
)

GROUP_COLUMNS = {
    GroupBy.TEAM: "team",
    GroupBy.SERVICE: "service",
    GroupBy.USER: '"user"',
    GroupBy.KEY: "key_id",
    GroupBy.MODEL: "served_model",
    GroupBy.ORG: "org",
    GroupBy.PROVIDER: "provider",
}
# Selected in UsageGroup's field order, so a row builds a UsageGroup positionally.
USAGE = {
    group_by: (
        f"SELECT {column} AS grp, SUM(blocked_by IS NULL), SUM(input_tokens), "  # noqa: S608
        "SUM(cached_input_tokens), SUM(cache_write_tokens), SUM(output_tokens), "
        "SUM(reasoning_tokens), SUM(cost_nanos), SUM(status >= 400 AND blocked_by IS NULL), "
        "SUM(usage_estimated), SUM(blocked_by IS NOT NULL), SUM(would_cost_nanos), "
        "SUM(retry_count > 0 AND blocked_by IS NULL), "
        "SUM(CASE WHEN retry_count > 0 THEN cost_nanos ELSE 0 END) "
        "FROM ledger WHERE ts >= ? AND ts < ? "
        "GROUP BY grp ORDER BY SUM(cost_nanos) DESC, grp IS NULL, grp"
    )
    for group_by, column in GROUP_COLUMNS.items()
}

# Savings (`spendgate.domain.savings`): rows of one request share its id up to ``-<attempt>``;
# refused requests are left out; an unreconciled row counts at its charge on every side.
_SAVINGS_ROWS = (
    "SELECT {column} AS grp, "
    "CASE WHEN attempt > 0 AND substr(request_id, -length(attempt) - 1) = '-' || attempt"
    " THEN substr(request_id, 1, length(request_id) - length(attempt) - 1)"
    " ELSE request_id END AS req, cost_nanos, "
    "CASE WHEN baseline_cost_nanos IS NULL OR unreconciled THEN cost_nanos"
    " ELSE baseline_cost_nanos END AS counterfactual, "
    "CASE WHEN shadow_cost_nanos IS NULL OR unreconciled THEN cost_nanos"
    " ELSE shadow_cost_nanos END AS shadow_cost, "
    "route_kind, attempt, status, shadow_rule "
    "FROM ledger WHERE ts >= ? AND ts < ? AND blocked_by IS NULL"
)
# Selected in SavingsGroup's field order (no budget caps: the capped counterfactual is the
# counterfactual; `spendgate.services.savings` applies the caps).
SAVINGS = {
    name: (
        f"WITH r AS ({_SAVINGS_ROWS.format(column=column)}) "  # noqa: S608
        "SELECT grp, COUNT(DISTINCT req), SUM(cost_nanos), SUM(counterfactual), "
        "COUNT(DISTINCT CASE WHEN route_kind = 'alias' THEN req END), "
        "COUNT(DISTINCT CASE WHEN route_kind = 'rewrite' THEN req END), "
        "COUNT(DISTINCT CASE WHEN route_kind = 'downgrade' THEN req END), "
        "COUNT(DISTINCT CASE WHEN attempt > 0 AND status < 400 THEN req END), "
        "SUM(shadow_cost), SUM(counterfactual), SUM(cost_nanos - shadow_cost) "
        "FROM r GROUP BY grp"
    )
    for name, column in (("team", "team"), ("service", "service"))
}
# Selected in ShadowSavings' field order.
SHADOW_SAVINGS = (
    f"WITH r AS ({_SAVINGS_ROWS.format(column='NULL')}) "  # noqa: S608
    "SELECT shadow_rule, COUNT(DISTINCT req), SUM(cost_nanos), SUM(shadow_cost) "
    "FROM r WHERE shadow_rule IS NOT NULL GROUP BY shadow_rule ORDER BY shadow_rule"
)
