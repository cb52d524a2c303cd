"""A process pool for the work on large request bodies that would otherwise hold the
event loop (and with it every other request) for tens to hundreds of milliseconds:
measuring a body's structure and counting its tokens (`spendgate.dialects.offloaded`).

Python threads would not help: the parser and the tokenizer hold the GIL while they run,
so the loop would wait for them anyway. A worker process parses its own copy of the bytes
on another core. Workers start on first use (a gateway that never sees a large body never
starts one) with the ``spawn`` method (forking a process that runs threads is unsafe).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # imported with the first pool: a gateway that never starts one never
    from concurrent.futures import ProcessPoolExecutor  # holds them (~0.7 MB of modules)

log = logging.getLogger("spendgate.offload")

T = TypeVar("T")

LARGE_BODY_BYTES = 512 * 1024  # a body this large is examined in a worker
WORKERS = 2


class Offload:
    def __init__(self, workers: int = WORKERS) -> None:
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._broken = False  # once broken, work runs on the loop from then on

    @property
    def started(self) -> bool:
        return self._pool is not None

    async def run(self, work: Callable[..., T], *args: object) -> T:
        """``work(*args)`` in a worker; on the loop itself if the pool is broken (a worker
        killed, or a program embedding spendgate whose main module cannot be re-imported:
        slower for the others, but the request is still served correctly)."""
        if self._broken:
            return work(*args)
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=context)
        from concurrent.futures.process import BrokenProcessPool

        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)
        except BrokenProcessPool:
            log.error("the worker pool broke; large bodies are handled on the event loop")
            self.close()
            self._broken = True
            return work(*args)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
