"""Refuse only when the money is gone: a request that a budget could afford but for the
reservations of requests in flight waits here, first come first served per budget member,
for one of them to settle and give back what it reserved beyond its real cost.

Each budget member (a counter) has a line of waiters. The first tries the reservation again
whenever a request of this process holding that counter settles or is released, and every
`POLL_S` in any case (another process's settlement cannot wake it); the others wait their
turn. Whoever gets in passes the turn on at once, so several can get in on one
settlement. A waiter leaves after ``max_wait_s`` (then the request gets a retryable
refusal), and a line holds at most ``max_waiting``: past that a newcomer gets one try and
no wait (an overload, where holding room back for the line would only refuse more). Nothing
here decides spend: every try is the counter store's atomic reservation.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from spendgate.domain.admission import Admitted, Refused

POLL_S = 0.25  # the first waiter tries again at least this often
SETTLE_GUESS_S = 5.0  # how long a request takes, until some have been seen
EWMA_WEIGHT = 0.1  # of each newly seen duration in the running estimate
MIN_SLICE_S = 0.001  # the shortest wait worth sleeping for


@dataclass(frozen=True, slots=True)
class Waited:
    """How a wait ended: the decision of the last try, and how long it took (loop time)."""

    decision: Admitted | Refused
    waited_s: float
    timed_out: bool  # the bound was reached (or the line was full)


Watcher = Callable[[str, Waited], None]  # told the counter and how each wait ended


class AdmissionQueue:
    def __init__(self, *, max_wait_s: float, max_waiting: int) -> None:
        self.max_wait_s = max_wait_s
        self.max_waiting = max_waiting
        self._lines: dict[str, deque[asyncio.Future[None]]] = {}
        self._holding: dict[str, int] = {}  # counter -> this process's reservations on it
        self.typical_s = SETTLE_GUESS_S  # how long a budgeted request takes, running average
        self.watchers: list[Watcher] = []  # metrics: cheap, and never raising

    def lines(self) -> dict[str, int]:
        """How many wait in each counter's line now."""
        return {key: len(line) for key, line in self._lines.items() if line}

    def took(self, seconds: float) -> None:
        """A budgeted request took this long, from arrival to settlement."""
        self.typical_s += EWMA_WEIGHT * (seconds - self.typical_s)

    # -- what this process holds ---------------------------------------------------------

    def held(self, counters: Iterable[str]) -> None:
        for key in counters:
            self._holding[key] = self._holding.get(key, 0) + 1

    def freed(self, counters: Iterable[str]) -> None:
        """Reservations on these counters settled or were released: the first in each line
        tries again."""
        for key in counters:
            left = self._holding.get(key, 0) - 1
            if left > 0:
                self._holding[key] = left
            else:
                self._holding.pop(key, None)
            self._wake(key)

    def holding(self, key: str) -> int:
        """How many requests of this process hold a reservation on the counter."""
        return self._holding.get(key, 0)

    def waiting(self, key: str) -> int:
        return len(self._lines.get(key, ()))

    def busy(self, counters: Iterable[str]) -> str | None:
        """The first of these counters that has a line: a newcomer queues behind it rather
        than take room that a waiter is owed."""
        for key in counters:
            if self._lines.get(key):
                return key
        return None

    # -- the line ------------------------------------------------------------------------

    def _wake(self, key: str) -> None:
        line = self._lines.get(key)
        if line and not line[0].done():
            line[0].set_result(None)

    async def wait_for_room(
        self,
        key: str,
        attempt: Callable[[], Awaitable[Admitted | Refused]],
        worth_waiting: Callable[[Refused], bool],
    ) -> Waited:
        """Wait in the counter's line until ``attempt`` admits the request, it is refused
        for a reason waiting cannot help (``worth_waiting`` says no), or the bound."""
        waited = await self._wait(key, attempt, worth_waiting)
        for watcher in self.watchers:
            watcher(key, waited)
        return waited

    async def _wait(
        self,
        key: str,
        attempt: Callable[[], Awaitable[Admitted | Refused]],
        worth_waiting: Callable[[Refused], bool],
    ) -> Waited:
        loop = asyncio.get_running_loop()
        started = loop.time()
        line = self._lines.setdefault(key, deque())
        if len(line) >= self.max_waiting:
            return Waited(await attempt(), 0.0, timed_out=True)
        me: asyncio.Future[None] = loop.create_future()
        line.append(me)
        deadline = started + self.max_wait_s
        try:
            while True:
                left = deadline - loop.time()
                if left < MIN_SLICE_S:  # (a shorter sleep may not move the loop's clock)
                    return Waited(await attempt(), loop.time() - started, timed_out=True)
                poll = POLL_S if line[0] is me else left
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(me), min(poll, left))
                if line[0] is not me:
                    continue  # not our turn yet: a timeout slice, wait on
                decision = await attempt()
                if isinstance(decision, Admitted) or not worth_waiting(decision):
                    return Waited(decision, loop.time() - started, timed_out=False)
                if me.done():
                    me = loop.create_future()
                    line[0] = me
        finally:
            self._leave(key, line, me)

    def _leave(self, key: str, line: deque[asyncio.Future[None]], me: asyncio.Future[None]) -> None:
        first = bool(line) and line[0] is me
        with contextlib.suppress(ValueError):
            line.remove(me)
        if first:
            self._wake(key)  # the turn passes on: the next may fit too
        if not line:
            self._lines.pop(key, None)


FULL_REMEMBERED = 4096  # counters remembered as full; past it the memory starts again


class FullLimits:
    """The request-rate and concurrency limits this process has seen full. A request reads
    such a limit before any work on its body, to refuse cheaply while it stays full; a
    limit never seen full is not read first (the atomic reservation decides either way, so
    this only saves a read per request when there is room). Per process: another process
    filling a limit is learnt from the first reservation it refuses here."""

    def __init__(self) -> None:
        self._full: set[tuple[str, str]] = set()  # (limit, member), whatever the window

    def may_be_full(self, limit: str, member: str) -> bool:
        return (limit, member) in self._full

    def saw_full(self, limit: str, member: str) -> None:
        if len(self._full) >= FULL_REMEMBERED:
            self._full.clear()
        self._full.add((limit, member))

    def saw_room(self, limit: str, member: str) -> None:
        self._full.discard((limit, member))

    def __len__(self) -> int:
        return len(self._full)
