"""The alert store on SQLite (`SqliteAlerts`): raising and claiming are writer jobs, each in
the writer's ``BEGIN IMMEDIATE`` transaction, so they are atomic against every process on
the file; the log is read on the report thread."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from spendgate.clock import from_ms, to_ms
from spendgate.domain.alerts import Alert, Delivery, DeliveryLog
from spendgate.storage.sqlite.file import SqliteFile

_RAISE = (
    "INSERT OR IGNORE INTO alerts (kind, subject, member, period_ms, mark, created_ms, title, "
    "payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
_ENQUEUE = (
    "INSERT INTO alert_deliveries (alert_id, channel, status, attempts, next_ms, created_ms, "
    "updated_ms) VALUES (?, ?, 'pending', 0, ?, ?, ?)"
)
_DUE = (
    "SELECT d.id, d.alert_id, d.channel, d.attempts, a.payload FROM alert_deliveries d "
    "JOIN alerts a ON a.id = d.alert_id WHERE d.status = 'pending' AND d.next_ms <= ? "
    "AND (d.claim_until_ms IS NULL OR d.claim_until_ms < ?) ORDER BY d.next_ms, d.id LIMIT ?"
)
_ANY_DUE = (
    "SELECT 1 FROM alert_deliveries WHERE status = 'pending' AND next_ms <= ? "
    "AND (claim_until_ms IS NULL OR claim_until_ms < ?) LIMIT 1"
)
_CLAIM = "UPDATE alert_deliveries SET claimed_by = ?, claim_until_ms = ? WHERE id = ?"
_HELD = (
    "SELECT attempts FROM alert_deliveries WHERE id = ? AND claimed_by = ? AND status = 'pending'"
)
_FINISH = (
    "UPDATE alert_deliveries SET status = ?, attempts = attempts + 1, next_ms = ?, "
    "last_error = ?, delivered_ms = ?, updated_ms = ?, claimed_by = NULL, "
    "claim_until_ms = NULL WHERE id = ?"
)
_LOG = (
    "SELECT d.id, d.alert_id, a.kind, a.subject, a.member, a.mark, a.title, d.channel, "
    "d.status, d.attempts, d.last_error, d.created_ms, d.next_ms, d.delivered_ms, "
    "d.updated_ms FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
)


class SqliteAlerts:
    def __init__(self, file: SqliteFile) -> None:
        self._file = file

    async def raise_alert(self, alert: Alert, channels: Sequence[str]) -> int | None:
        now_ms = to_ms(self._file.clock.now())
        payload = orjson.dumps(alert.to_json()).decode()
        row = (*alert.key, now_ms, alert.title, payload)

        def work(conn: sqlite3.Connection) -> int | None:
            cursor = conn.execute(_RAISE, row)
            if cursor.rowcount != 1:
                return None
            alert_id = int(cursor.lastrowid or 0)
            conn.executemany(
                _ENQUEUE, [(alert_id, channel, now_ms, now_ms, now_ms) for channel in channels]
            )
            return alert_id

        return await self._file.submit(work, f"alert {alert.kind} {alert.subject!r}")

    async def claim_due(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        now_ms, until_ms = to_ms(now), to_ms(lease_until)
        # A look on the reader first: most polls find nothing due, and then take no write
        # lock away from the requests' reservations.
        if not self._file.read(_ANY_DUE, (now_ms, now_ms)):
            return []

        def work(conn: sqlite3.Connection) -> list[Delivery]:
            rows = conn.execute(_DUE, (now_ms, now_ms, limit)).fetchall()
            conn.executemany(_CLAIM, [(owner, until_ms, row[0]) for row in rows])
            return [
                Delivery(int(r[0]), int(r[1]), str(r[2]), int(r[3]), orjson.loads(r[4]))
                for r in rows
            ]

        return await self._file.submit(work, "alert deliveries due")

    async def finish(
        self,
        delivery_id: int,
        owner: str,
        now: datetime,
        *,
        error: str | None,
        retry_at: datetime | None,
    ) -> bool:
        now_ms = to_ms(now)
        if error is None:
            status, next_ms, delivered = "delivered", now_ms, now_ms
        elif retry_at is not None:
            status, next_ms, delivered = "pending", to_ms(retry_at), None
        else:
            status, next_ms, delivered = "failed", now_ms, None

        def work(conn: sqlite3.Connection) -> bool:
            if conn.execute(_HELD, (delivery_id, owner)).fetchone() is None:
                return False
            params = (status, next_ms, error, delivered, now_ms, delivery_id)
            conn.execute(_FINISH, params)
            return True

        return await self._file.submit(work, f"alert delivery {delivery_id}")

    async def log(self, limit: int, status: str | None = None) -> list[DeliveryLog]:
        sql = _LOG + ("WHERE d.status = ? " if status else "") + "ORDER BY d.id DESC LIMIT ?"
        params: tuple[Any, ...] = (status, limit) if status else (limit,)

        def work(conn: sqlite3.Connection) -> list[DeliveryLog]:
            return [log_row(row) for row in conn.execute(sql, params).fetchall()]

        return await self._file.report(work)


def log_row(r: tuple[Any, ...]) -> DeliveryLog:
    """A delivery log row as the SQL backends select it (PostgreSQL uses it too)."""
    status = str(r[8])
    return DeliveryLog(
        delivery_id=int(r[0]),
        alert_id=int(r[1]),
        kind=str(r[2]),
        subject=str(r[3]),
        member=str(r[4]),
        mark=str(r[5]),
        title=str(r[6]),
        channel=str(r[7]),
        status=status,
        attempts=int(r[9]),
        last_error=r[10],
        created_at=from_ms(int(r[11])),
        next_at=from_ms(int(r[12])) if status == "pending" else None,
        delivered_at=from_ms(int(r[13])) if r[13] is not None else None,
        updated_at=from_ms(int(r[14])),
    )
