"""The blocks of detected loops on SQLite (table ``loop_blocks``, migration 0009): the
statements, and the strike, which reads, decides (`spendgate.domain.loops.LoopPolicy`)
and writes in one writer job, so two processes detecting one loop at once strike it once."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any

from spendgate.clock import from_ms, to_ms
from spendgate.domain.loops import LoopBlock, LoopPolicy, loop_id

ONE = """SELECT key_id, fingerprint, model, strikes, detected_ms, until_ms
FROM loop_blocks WHERE id = ?"""
ALL = """SELECT key_id, fingerprint, model, strikes, detected_ms, until_ms
FROM loop_blocks ORDER BY detected_ms DESC, id DESC"""
DELETE = "DELETE FROM loop_blocks WHERE id = ?"
PRUNE = "DELETE FROM loop_blocks WHERE until_ms < ?"
_UPSERT = """
INSERT INTO loop_blocks (id, key_id, fingerprint, model, strikes, detected_ms, until_ms)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (id) DO UPDATE SET model = excluded.model, strikes = excluded.strikes,
    detected_ms = excluded.detected_ms, until_ms = excluded.until_ms
"""


def block_of(row: tuple[Any, ...]) -> LoopBlock:
    key_id, fingerprint, model, strikes, detected_ms, until_ms = row
    return LoopBlock(
        key_id=key_id,
        fingerprint=fingerprint,
        model=model,
        strikes=strikes,
        detected_at=from_ms(detected_ms),
        until=from_ms(until_ms),
    )


def strike_work(
    policy: LoopPolicy,
    key_id: str,
    fingerprint: str,
    model: str,
    now: datetime,
    conn: sqlite3.Connection,
) -> LoopBlock:
    block_id = loop_id(key_id, fingerprint)
    found = conn.execute(ONE, (block_id,)).fetchone()
    previous = block_of(found) if found is not None else None
    block = policy.strike(
        previous, key_id=key_id, fingerprint=fingerprint, model=model, now=from_ms(to_ms(now))
    )
    if block != previous:
        conn.execute(
            _UPSERT,
            (
                block_id,
                key_id,
                fingerprint,
                model,
                block.strikes,
                to_ms(block.detected_at),
                to_ms(block.until),
            ),
        )
    return block


def release_work(block_id: str, conn: sqlite3.Connection) -> LoopBlock | None:
    found = conn.execute(ONE, (block_id,)).fetchone()
    if found is None:
        return None
    conn.execute(DELETE, (block_id,))
    return block_of(found)
