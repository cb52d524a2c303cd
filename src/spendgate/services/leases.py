"""Leases of reservations: this process renews its own, and settles lapsed ones from any
process (a gateway that died with requests in flight), so no reservation outlives the
request that made it by more than one lease. Rows that storage would not take wait in the
spool (`spendgate.storage.spool`): each tick writes them first, and never renews their
leases, which lapse if the rows cannot be written in time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from spendgate.clock import Clock
from spendgate.domain.budgets import BudgetBook
from spendgate.errors import StorageError
from spendgate.events import Events, LeaseLapsed
from spendgate.storage import Storage
from spendgate.storage.spool import Spool

log = logging.getLogger("spendgate.budgets")

SPOOL_RETRY_S = 1.0  # how often rows waiting in the spool are tried while any wait


class LeaseKeeper:
    """Renews this process's leases, settles lapsed ones (from any process), and drops
    counter rows no window counts any more (loop fingerprints, old rolling buckets), and
    loop blocks whose strikes are forgotten."""

    def __init__(
        self,
        storage: Storage,
        owner: str,
        lease: timedelta,
        clock: Clock,
        book: BudgetBook | None = None,
        events: Events | None = None,
        spool: Spool | None = None,
        idle: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._storage = storage
        self._owner = owner
        self._lease = lease
        self._clock = clock
        self._book = book
        self._events = events
        self.spool = spool
        self._idle = idle  # after each periodic tick (`spendgate.services.idle`)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="lease-keeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def tick(self) -> int:
        now = self._clock.now()
        lapsing: frozenset[str] = frozenset()
        if self.spool is not None:
            if await self.spool.replay(self._storage):
                log.warning("wrote rows that waited in the spool", extra={"left": len(self.spool)})
            lapsing = self.spool.reservations()
        await self._storage.renew_leases(self._owner, now + self._lease, lapsing)
        lapsed = await self._storage.sweep(now)
        if self._events is not None:
            for row in lapsed:
                self._events.emit(LeaseLapsed(row))
        if self._book is not None:
            await self._storage.prune_counters(self._book.oldest_counted(now))
            if self._book.loops is not None:  # blocks whose strikes are forgotten
                await self._storage.prune_loops(self._book.loops.forgotten_before(now))
        return len(lapsed)

    async def _run(self) -> None:
        interval = max(0.2, self._lease.total_seconds() / 4)
        failing = False
        while True:
            try:
                lapsed = await self.tick()
                if lapsed:
                    log.warning("settled lapsed reservations", extra={"count": lapsed})
                if failing:
                    log.warning("storage answers again; leases renewed")
                failing = False
                if self._idle is not None:
                    await self._idle()
            except StorageError as exc:  # told once per outage, not every tick
                if not failing:
                    log.error("cannot renew leases: storage fails", extra={"error": str(exc)})
                failing = True
            except Exception:
                log.exception("lease keeper tick failed; retrying")
            await self._pause(interval)

    async def _pause(self, interval: float) -> None:
        """Until the next tick: ``interval``, or a second while rows wait in the spool
        (looked at every second: a row spooled meanwhile is tried within one)."""
        slept = 0.0
        while slept < interval:
            step = min(SPOOL_RETRY_S, interval - slept)
            await asyncio.sleep(step)
            slept += step
            if self.spool:
                return
