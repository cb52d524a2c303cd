"""The alert store role (`AlertStore`): alerts raised once, and their durable outbox.

* `raise_alert` inserts the alert's row unless one with its key is there (``INSERT OR
  IGNORE`` on a unique key), and only when it inserted it, one pending delivery per
  channel, in the same transaction: however many requests and processes see a threshold
  crossed, one of them raises it, and its deliveries exist exactly once.
* `claim_due` takes due deliveries under a lease, atomically against every process on the
  store: a process that dies holding one lets its lease lapse and another takes it over.
* `finish` records an attempt: delivered, retry at a time, or failed for good.
* `log` is the delivery log, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Protocol

from spendgate.domain.alerts import Alert, Delivery, DeliveryLog

__all__ = ["AlertStore"]


class AlertStore(Protocol):
    async def raise_alert(self, alert: Alert, channels: Sequence[str]) -> int | None:
        """The new alert's id, with a pending delivery per channel due at once; None (and
        nothing written) if an alert with its key was raised before."""
        ...

    async def claim_due(
        self, owner: str, now: datetime, lease_until: datetime, limit: int
    ) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due at ``now`` whose claim (if any) lapsed,
        oldest due first, now claimed by ``owner`` until ``lease_until``."""
        ...

    async def finish(
        self,
        delivery_id: int,
        owner: str,
        now: datetime,
        *,
        error: str | None,
        retry_at: datetime | None,
    ) -> bool:
        """Record one attempt of a delivery ``owner`` holds: delivered (``error`` None),
        pending again until ``retry_at``, or failed (an error and no ``retry_at``). False,
        changing nothing, if ``owner`` no longer holds it."""
        ...

    async def log(self, limit: int, status: str | None = None) -> list[DeliveryLog]:
        """Deliveries, newest alert first (``status``: only those in it)."""
        ...
