"""The alert store on PostgreSQL (`PgAlerts`), shared by every gateway on the database.

* `raise_alert`: ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` on the alert's unique
  key; only the transaction that inserted the row (a racer blocks on the key until the
  inserter commits, then inserts nothing) adds the deliveries, in the same transaction.
* `claim_due`: one statement, ``FOR UPDATE SKIP LOCKED`` under the lease update: gateways
  polling at once take disjoint rows, and a row another claim just committed is checked
  again against the lease (READ COMMITTED re-reads it), so it is never held twice.
* `finish`: one ``UPDATE`` guarded by the holder, so a lapsed holder changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson

from spendgate.clock import to_ms
from spendgate.domain.alerts import Alert, Delivery, DeliveryLog
from spendgate.storage.postgres.database import Conn, PgDatabase
from spendgate.storage.sqlite.alerts import log_row

_RAISE = (
    "INSERT INTO alerts (kind, subject, member, period_ms, mark, created_ms, title, payload) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
    "ON CONFLICT (kind, subject, member, period_ms, mark) DO NOTHING RETURNING id"
)
_ENQUEUE = (
    "INSERT INTO alert_deliveries (alert_id, channel, status, attempts, next_ms, created_ms, "
    "updated_ms) SELECT $1, channel, 'pending', 0, $3, $3, $3 "
    "FROM unnest($2::text[]) WITH ORDINALITY AS c (channel, n) ORDER BY n"
)
_CLAIM = (
    "WITH due AS (SELECT id FROM alert_deliveries WHERE status = 'pending' AND next_ms <= $1 "
    "AND (claim_until_ms IS NULL OR claim_until_ms < $1) ORDER BY next_ms, id LIMIT $2 "
    "FOR UPDATE SKIP LOCKED) "
    "UPDATE alert_deliveries d SET claimed_by = $3, claim_until_ms = $4 FROM due, alerts a "
    "WHERE d.id = due.id AND a.id = d.alert_id "
    "RETURNING d.id, d.alert_id, d.channel, d.attempts, a.payload, d.next_ms"
)
_FINISH = (
    "UPDATE alert_deliveries SET status = $1, attempts = attempts + 1, next_ms = $2, "
    "last_error = $3, delivered_ms = $4, updated_ms = $5, claimed_by = NULL, "
    "claim_until_ms = NULL WHERE id = $6 AND claimed_by = $7 AND status = 'pending'"
)
_LOG = (
    "SELECT d.id, d.alert_id, a.kind, a.subject, a.member, a.mark, a.title, d.channel, "
    "d.status, d.attempts, d.last_error, d.created_ms, d.next_ms, d.delivered_ms, "
    "d.updated_ms FROM alert_deliveries d JOIN alerts a ON a.id = d.alert_id "
)


class PgAlerts:
    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def raise_alert(self, alert: Alert, channels: Sequence[str]) -> int | None:
        now_ms = to_ms(self._db.clock.now())
        payload = orjson.dumps(alert.to_json()).decode()
        row = (*alert.key, now_ms, alert.title, payload)

        async def work(conn: Conn) -> int | None:
            alert_id = await conn.fetchval(_RAISE, *row)
            if alert_id is None:
                return None
            await conn.execute(_ENQUEUE, alert_id, list(channels), now_ms)
            return int(alert_id)

        return await self._db.transaction(work, f"alert {alert.kind} {alert.subject!r}")

    async def claim_due(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        now_ms, until_ms = to_ms(now), to_ms(lease_until)
        rows = await self._db.run(
            lambda conn: conn.fetch(_CLAIM, now_ms, limit, owner, until_ms),
            "alert deliveries due",
        )
        ordered = sorted(rows, key=lambda r: (r[5], r[0]))  # RETURNING keeps no order
        return [
            Delivery(int(r[0]), int(r[1]), str(r[2]), int(r[3]), orjson.loads(r[4]))
            for r in ordered
        ]

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
        params = (status, next_ms, error, delivered, now_ms, delivery_id, owner)
        done = await self._db.run(
            lambda conn: conn.execute(_FINISH, *params), f"alert delivery {delivery_id}"
        )
        return bool(done == "UPDATE 1")

    async def log(self, limit: int, status: str | None = None) -> list[DeliveryLog]:
        if status:
            sql = f"{_LOG}WHERE d.status = $1 ORDER BY d.id DESC LIMIT $2"
            params: tuple[Any, ...] = (status, limit)
        else:
            sql, params = f"{_LOG}ORDER BY d.id DESC LIMIT $1", (limit,)
        rows = await self._db.run(lambda conn: conn.fetch(sql, *params), "the alert log")
        return [log_row(tuple(row)) for row in rows]
