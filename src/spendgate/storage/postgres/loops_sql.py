"""The blocks of detected loops on PostgreSQL: the statements, and the strike, which reads,
decides (`spendgate.domain.loops.LoopPolicy`) and writes in one transaction under the
pair's advisory lock (a row lock cannot cover a block not stored yet), so two gateways
detecting one loop at once strike it once."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from spendgate.clock import from_ms, to_ms
from spendgate.domain.loops import LoopBlock, LoopPolicy, loop_id
from spendgate.storage.postgres.database import Conn, lock_key

_COLUMNS = "key_id, fingerprint, model, strikes, detected_ms, until_ms"
ONE = f"SELECT {_COLUMNS} FROM loop_blocks WHERE id = $1"  # noqa: S608
ALL = f'SELECT {_COLUMNS} FROM loop_blocks ORDER BY detected_ms DESC, id COLLATE "C" DESC'  # noqa: S608
DELETE = f"DELETE FROM loop_blocks WHERE id = $1 RETURNING {_COLUMNS}"  # noqa: S608
PRUNE = "DELETE FROM loop_blocks WHERE until_ms < $1"
_UPSERT = """
INSERT INTO loop_blocks (id, key_id, fingerprint, model, strikes, detected_ms, until_ms)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (id) DO UPDATE SET model = excluded.model, strikes = excluded.strikes,
    detected_ms = excluded.detected_ms, until_ms = excluded.until_ms
"""


def block_of(row: asyncpg.Record) -> LoopBlock:
    key_id, fingerprint, model, strikes, detected_ms, until_ms = row
    return LoopBlock(
        key_id=key_id,
        fingerprint=fingerprint,
        model=model,
        strikes=strikes,
        detected_at=from_ms(detected_ms),
        until=from_ms(until_ms),
    )


async def strike(
    policy: LoopPolicy,
    key_id: str,
    fingerprint: str,
    model: str,
    now: datetime,
    conn: Conn,
) -> LoopBlock:
    block_id = loop_id(key_id, fingerprint)
    await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key("loop", block_id))
    found = await conn.fetchrow(ONE, block_id)
    previous = block_of(found) if found is not None else None
    block = policy.strike(
        previous, key_id=key_id, fingerprint=fingerprint, model=model, now=from_ms(to_ms(now))
    )
    if block != previous:
        await conn.execute(
            _UPSERT,
            block_id,
            key_id,
            fingerprint,
            model,
            block.strikes,
            to_ms(block.detected_at),
            to_ms(block.until),
        )
    return block
