"""A bound on guessing admin credentials: failed sign-ins (``/ui/login``) and failed admin
API credentials counted per client address. After `LIMIT` failures within `WINDOW`
seconds the address is answered 429 with ``Retry-After`` until the window ends; a correct
credential is never counted. Memory is bounded: at most `CAPACITY` addresses are kept, the
least recently failed forgotten first."""

from __future__ import annotations

import math
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable

from aiohttp import web

LIMIT = 10
WINDOW = 300.0
CAPACITY = 10_000


class FailedAttempts:
    def __init__(
        self,
        limit: int = LIMIT,
        window: float = WINDOW,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limit, self.window, self.capacity, self.clock = limit, window, capacity, clock
        self._failures: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try again, or None while it may."""
        entry = self._failures.get(address)
        if entry is None:
            return None
        count, since = entry
        left = since + self.window - self.clock()
        if left <= 0:
            del self._failures[address]
            return None
        return max(1, math.ceil(left)) if count >= self.limit else None

    def failed(self, address: str) -> None:
        now = self.clock()
        count, since = self._failures.pop(address, (0, now))
        if since + self.window <= now:
            count, since = 0, now
        self._failures[address] = (count + 1, since)
        while len(self._failures) > self.capacity:
            self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


_LIMITERS: weakref.WeakKeyDictionary[object, FailedAttempts] = weakref.WeakKeyDictionary()


def attempts_for(gateway: object) -> FailedAttempts:
    """The gateway's counter of failed credentials (one per gateway)."""
    limiter = _LIMITERS.get(gateway)
    if limiter is None:
        limiter = _LIMITERS[gateway] = FailedAttempts()
    return limiter


def address_of(request: web.Request) -> str:
    """The peer address (spendgate trusts no forwarding header for it)."""
    return request.remote or "unknown"


def refuse_if_blocked(request: web.Request, gateway: object) -> None:
    """429 with ``Retry-After`` while the request's address has failed too often."""
    wait = attempts_for(gateway).retry_after(address_of(request))
    if wait is not None:
        raise web.HTTPTooManyRequests(
            headers={"Retry-After": str(wait)},
            text='{"error": {"type": "rate_limit_error", "code": "too_many_failed_credentials", '
            '"message": "Too many wrong admin credentials from this address: try later."}}',
            content_type="application/json",
        )
