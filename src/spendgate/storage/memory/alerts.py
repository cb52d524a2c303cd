"""The alert store in memory: the same contract as SQLite's, for one process (no await
between a check and its write, so each method is atomic on the event loop)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from spendgate.clock import Clock
from spendgate.domain.alerts import Alert, AlertKey, Delivery, DeliveryLog
from spendgate.storage.memory.state import State


@dataclass(slots=True)
class _Row:
    delivery_id: int
    alert_id: int
    channel: str
    status: str
    attempts: int
    next_at: datetime
    created_at: datetime
    updated_at: datetime
    claimed_by: str | None = None
    claim_until: datetime | None = None
    last_error: str | None = None
    delivered_at: datetime | None = None


class MemoryAlerts:
    def __init__(self, state: State, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self._alerts: dict[AlertKey, int] = {}
        self._by_id: dict[int, Alert] = {}
        self._rows: list[_Row] = []

    async def raise_alert(self, alert: Alert, channels: Sequence[str]) -> int | None:
        self._state.require()
        if alert.key in self._alerts:
            return None
        alert_id = len(self._by_id) + 1
        self._alerts[alert.key] = alert_id
        self._by_id[alert_id] = alert
        now = self._clock.now()
        for channel in channels:
            self._rows.append(
                _Row(len(self._rows) + 1, alert_id, channel, "pending", 0, now, now, now)
            )
        return alert_id

    async def claim_due(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        self._state.require()
        due = [
            row
            for row in self._rows
            if row.status == "pending"
            and row.next_at <= now
            and (row.claim_until is None or row.claim_until < now)
        ]
        due.sort(key=lambda row: (row.next_at, row.delivery_id))
        claimed = []
        for row in due[:limit]:
            row.claimed_by, row.claim_until = owner, lease_until
            payload = self._by_id[row.alert_id].to_json()
            claimed.append(
                Delivery(row.delivery_id, row.alert_id, row.channel, row.attempts, payload)
            )
        return claimed

    async def finish(
        self,
        delivery_id: int,
        owner: str,
        now: datetime,
        *,
        error: str | None,
        retry_at: datetime | None,
    ) -> bool:
        self._state.require()
        if not 0 < delivery_id <= len(self._rows):
            return False
        row = self._rows[delivery_id - 1]
        if row.claimed_by != owner or row.status != "pending":
            return False
        row.attempts += 1
        row.updated_at = now
        row.last_error = error
        row.claimed_by = row.claim_until = None
        if error is None:
            row.status, row.delivered_at = "delivered", now
        elif retry_at is not None:
            row.next_at = retry_at
        else:
            row.status = "failed"
        return True

    async def log(self, limit: int, status: str | None = None) -> list[DeliveryLog]:
        self._state.require()
        rows = [row for row in reversed(self._rows) if status is None or row.status == status]
        return [self._logged(row) for row in rows[:limit]]

    def _logged(self, row: _Row) -> DeliveryLog:
        alert = self._by_id[row.alert_id]
        return DeliveryLog(
            delivery_id=row.delivery_id,
            alert_id=row.alert_id,
            kind=alert.kind,
            subject=alert.subject,
            member=alert.member,
            mark=alert.mark,
            title=alert.title,
            channel=row.channel,
            status=row.status,
            attempts=row.attempts,
            last_error=row.last_error,
            created_at=row.created_at,
            next_at=row.next_at if row.status == "pending" else None,
            delivered_at=row.delivered_at,
            updated_at=row.updated_at,
        )
