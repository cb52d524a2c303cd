"""A storage chore run every few seconds while the storage is open (a `Lifecycle` part):
PostgreSQL's refusal roll-up (`spendgate.storage.postgres.report_rollups`), SQLite's
ledger roll-up (`spendgate.storage.sqlite.ledger.rolling_up`). A `StorageError` is logged
and the chore tried again next time: the outage policy is the requests' business."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from spendgate.errors import StorageError

log = logging.getLogger("spendgate.storage")


class Periodic:
    def __init__(self, chore: Callable[[], Awaitable[object]], every_s: float, what: str) -> None:
        self._chore = chore
        self._every_s = every_s
        self._what = what
        self._task: asyncio.Task[None] | None = None

    async def open(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                await self._chore()
            except StorageError as exc:
                log.warning("could not run %s", self._what, extra={"error": str(exc)})
