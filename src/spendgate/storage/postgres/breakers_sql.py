"""Circuit breakers on PostgreSQL (table ``breakers``, migration 0007): one transaction per
transition under an advisory lock of the pair, so two gateways failing at once count two
failures and only one of them claims a half-open probe."""

from __future__ import annotations

from typing import TypeVar

import asyncpg

from spendgate.domain.breaker import BreakerDecision, BreakerState
from spendgate.storage.postgres.database import Conn, lock_key

R = TypeVar("R")

ALL = "SELECT key_id, model, failures, opened_ms, probe_until_ms, failed_ms FROM breakers"
_ONE = ALL + " WHERE key_id = $1 AND model = $2"
_DELETE = "DELETE FROM breakers WHERE key_id = $1 AND model = $2"
PRUNE = "DELETE FROM breakers WHERE failed_ms < $1"
_UPSERT = """
INSERT INTO breakers (key_id, model, failures, opened_ms, probe_until_ms, failed_ms)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (key_id, model) DO UPDATE SET failures = excluded.failures,
    opened_ms = excluded.opened_ms, probe_until_ms = excluded.probe_until_ms,
    failed_ms = excluded.failed_ms
"""


def state_of(row: asyncpg.Record) -> BreakerState:
    key_id, model, failures, opened_ms, probe_until_ms, failed_ms = row
    return BreakerState(key_id, model, failures, opened_ms, probe_until_ms, failed_ms)


async def update(key_id: str, model: str, decide: BreakerDecision[R], conn: Conn) -> R:
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("breaker", key_id, model))
    found = await conn.fetchrow(_ONE, key_id, model)
    previous = state_of(found) if found is not None else None
    state, result = decide(previous)
    if state != previous:
        if state is None:
            await conn.execute(_DELETE, key_id, model)
        else:
            await conn.execute(
                _UPSERT,
                key_id,
                model,
                state.failures,
                state.opened_ms,
                state.probe_until_ms,
                state.failed_ms,
            )
    return result
