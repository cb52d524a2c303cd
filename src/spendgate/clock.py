"""The one place that tells the time. Everything else receives a `Clock`."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """Wall-clock time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a monotonic clock, for durations."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.perf_counter()


class ManualClock:
    """A clock that moves only when told to: for tests and simulations."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 1, 1, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds

    def set(self, when: datetime) -> None:
        if when.tzinfo is None:
            raise ValueError("ManualClock.set needs a timezone-aware datetime")
        self._mono += (when - self._now).total_seconds()
        self._now = when


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# The latest time storage may hold: `from_ms` of a later one overflows `datetime`, so a key,
# token or override expiring after it (``9999-12-31T23:59:59-05:00`` is in the year 10000
# in UTC) would fail every read of its row. Expiries are checked against it (`storable`).
LATEST = datetime(9999, 12, 31, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds, exact integer arithmetic (floor), aware datetimes only."""
    if moment.tzinfo is None:
        raise ValueError(f"datetime must be timezone-aware, got naive {moment.isoformat()}")
    return (moment - EPOCH) // _MS


def storable(moment: datetime) -> bool:
    """Whether an aware ``moment`` can be stored and read back (not after `LATEST`)."""
    return moment <= LATEST


_LAST = datetime.max.replace(tzinfo=UTC)
_LAST_MS = to_ms(_LAST)


def from_ms(value: int) -> datetime:
    """The moment of epoch milliseconds ``value``. One past the last that `datetime` holds
    (an expiry stored before `storable` was checked: the year 10000 in UTC) reads as that
    last moment, never in effect, rather than failing every read of its row."""
    if value > _LAST_MS:
        return _LAST
    return EPOCH + timedelta(milliseconds=value)
