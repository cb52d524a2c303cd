"""Giving memory back when the gateway goes idle.

A burst of traffic leaves memory behind that nothing uses once it has passed: SQLite's
page caches (up to 2 MB per connection, filled with the counter and key rows of every
caller seen) and the C heap's free chunks, which glibc keeps for the next allocation
instead of returning them (a heap is only trimmed from its top, and the threads' arenas
hardly ever). On a gateway with budgets after 20,000 requests from 10,000 keys that is a
few megabytes of its ~100 MB (docs/benchmarks.md, "Memory").

`IdleRelease` is asked on each lease-keeper tick (every quarter of the lease, 30 s by
default) and gives that memory back once per quiet spell: on the first tick that finds
no request started since the tick before and none in flight, if any request came since
the last release. A busy gateway never pays for it; a gateway that stays idle pays once.
The release asks storage to drop its caches (SQLite: ``PRAGMA shrink_memory`` on each
connection; the next request reads its pages back from the OS page cache), then the C
library to return its free heap memory to the system (glibc ``malloc_trim(0)``; nothing
elsewhere).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from spendgate.storage import Storage

log = logging.getLogger("spendgate.memory")


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function: Any = ctypes.CDLL(None).malloc_trim  # glibc; musl has none
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_size_t]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


def trim_heap() -> bool:
    """Return the C heap's free memory to the system (every arena): whether it could."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class IdleRelease:
    """Decides, tick by tick, when the gateway has gone idle (see the module's doc), and
    then runs ``release`` once."""

    def __init__(self, release: Callable[[], Awaitable[None]]) -> None:
        self._release = release
        self._seen = 0  # requests started, as counted at the last tick
        self._released = 0  # ... and at the last release

    async def tick(self, started: int, inflight: int) -> bool:
        """``started``: requests started since the process began; ``inflight``: running
        now. Whether memory was released."""
        quiet = started == self._seen and inflight == 0
        self._seen = started
        if not quiet or started == self._released:
            return False
        self._released = started
        await self._release()
        return True


async def release_memory(storage: Storage) -> None:
    """Storage's caches, then the C heap (what `IdleRelease` runs in the gateway)."""
    try:
        await storage.release_memory()
    except Exception:  # memory only: never a reason to fail a tick
        log.debug("storage could not release its caches", exc_info=True)
    trim_heap()
