"""Circuit breakers on SQLite (table ``breakers``, migration 0019): one read-decide-write
writer job per transition, so two processes failing at once count two failures and only
one of them claims a half-open probe."""

from __future__ import annotations

import sqlite3
from typing import Any, TypeVar

from spendgate.domain.breaker import BreakerDecision, BreakerState

R = TypeVar("R")

ALL = "SELECT key_id, model, failures, opened_ms, probe_until_ms, failed_ms FROM breakers"
_ONE = ALL + " WHERE key_id = ? AND model = ?"
_DELETE = "DELETE FROM breakers WHERE key_id = ? AND model = ?"
PRUNE = "DELETE FROM breakers WHERE failed_ms < ?"
_UPSERT = """
INSERT INTO breakers (key_id, model, failures, opened_ms, probe_until_ms, failed_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (key_id, model) DO UPDATE SET failures = excluded.failures,
    opened_ms = excluded.opened_ms, probe_until_ms = excluded.probe_until_ms,
    failed_ms = excluded.failed_ms
"""


def state_of(row: tuple[Any, ...]) -> BreakerState:
    return BreakerState(*row)


def update_work(key_id: str, model: str, decide: BreakerDecision[R], conn: sqlite3.Connection) -> R:
    found = conn.execute(_ONE, (key_id, model)).fetchone()
    previous = state_of(found) if found is not None else None
    state, result = decide(previous)
    if state != previous:
        if state is None:
            conn.execute(_DELETE, (key_id, model))
        else:
            conn.execute(
                _UPSERT,
                (
                    key_id,
                    model,
                    state.failures,
                    state.opened_ms,
                    state.probe_until_ms,
                    state.failed_ms,
                ),
            )
    return result
