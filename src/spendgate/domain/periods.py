"""Budget periods and the windows they cut time into. Pure; the clock is passed in.

Calendar periods (``hourly``, ``daily``, ``weekly``, ``monthly``) are aligned to the
configured time zone, week start and month start day, so "monthly" in Europe/Berlin resets
at local midnight on the 1st, whatever the UTC offset that day. ``lifetime`` never resets.

Rolling periods (``rolling:24h``, ``rolling:7d``, ``rolling:90m``) count the spend of the
last N units. Spend is kept in buckets of 1/`ROLLING_BUCKETS` of the window (at least a
minute); a bucket leaves the window only when all of it is older than the window, so spend
is counted for up to one bucket width longer than the window: the error is always on the
side of refusing, never of overspending.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from spendgate.clock import to_ms

ROLLING_BUCKETS = 24
_MIN_BUCKET = timedelta(minutes=1)
_HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ROLLING = re.compile(r"^rolling:([1-9][0-9]*)([mhd])$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1)}
# The longest rolling period: ten years. A window reaches back its length from now, and one
# of 2,000 years overflowed `datetime` on every request and listing; ``lifetime`` is longer.
MAX_ROLLING_DAYS = 3650


@dataclass(frozen=True, slots=True)
class Calendar:
    zone: ZoneInfo
    week_start: int = 0  # 0 = Monday
    month_start_day: int = 1

    @classmethod
    def of(cls, timezone: str, week_start: str = "monday", month_start_day: int = 1) -> Calendar:
        return cls(ZoneInfo(timezone), _WEEKDAYS.index(week_start.lower()), month_start_day)


@dataclass(frozen=True, slots=True)
class Period:
    kind: str  # hourly | daily | weekly | monthly | lifetime | rolling
    length: timedelta | None = None  # rolling periods only
    bucket: timedelta | None = None  # rolling periods: bucket width (default: 1/24, >= 1 min)

    @classmethod
    def parse(cls, text: str) -> Period:
        if text in {"hourly", "daily", "weekly", "monthly", "lifetime"}:
            return cls(text)
        match = _ROLLING.match(text)
        if match is None:
            raise ValueError(
                f"unknown period {text!r}: use hourly, daily, weekly, monthly, lifetime "
                "or rolling:<N>m|h|d"
            )
        amount, unit = int(match.group(1)), _UNITS[match.group(2)]
        if amount * (unit // _UNITS["m"]) > MAX_ROLLING_DAYS * 24 * 60:  # whole minutes
            raise ValueError(
                f"period {text!r} is too long: at most rolling:{MAX_ROLLING_DAYS}d (10 years); "
                "use lifetime for a budget that never resets"
            )
        return cls("rolling", amount * unit)

    def __str__(self) -> str:
        if self.length is None:
            return self.kind
        return f"rolling {_human(self.length)}"


@dataclass(frozen=True, slots=True)
class Window:
    """Where spend lands now (``bucket``) and which buckets count (``since`` onwards)."""

    since: datetime  # the oldest bucket start that still counts
    bucket: datetime  # the bucket that new spend goes into
    resets_at: datetime | None  # next calendar reset, or when the oldest bucket leaves
    # Both in epoch milliseconds, made once: a window is shared by every request of its
    # bucket (`BudgetBook.window`), and each request reads them several times per counter.
    since_ms: int = field(init=False, repr=False, compare=False)
    bucket_ms: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "since_ms", to_ms(self.since))
        object.__setattr__(self, "bucket_ms", to_ms(self.bucket))


_FOREVER = datetime(9999, 1, 1, tzinfo=UTC)


def bucket_end(period: Period, span: Window) -> datetime:
    """Until when ``span`` stays the window of ``period`` (its bucket's end)."""
    if period.kind == "lifetime":
        return _FOREVER
    if period.kind == "rolling":
        assert period.length is not None
        assert span.resets_at is not None
        width = span.resets_at - span.since - period.length
        return span.bucket + width
    assert span.resets_at is not None
    return span.resets_at


def window(period: Period, now: datetime, calendar: Calendar) -> Window:
    if now.tzinfo is None:
        raise ValueError("window() needs a timezone-aware now")
    if period.kind == "lifetime":
        return Window(since=_EPOCH, bucket=_EPOCH, resets_at=None)
    if period.kind == "rolling":
        assert period.length is not None
        width = period.bucket or max(_MIN_BUCKET, period.length / ROLLING_BUCKETS)
        return _rolling(period.length, width, now)
    start, end = _calendar_bounds(period.kind, now.astimezone(calendar.zone), calendar)
    return Window(
        since=start.astimezone(UTC), bucket=start.astimezone(UTC), resets_at=end.astimezone(UTC)
    )


def _rolling(length: timedelta, width: timedelta, now: datetime) -> Window:
    width_ms = max(1, to_ms(_EPOCH + width))
    bucket_ms = (to_ms(now) // width_ms) * width_ms
    # The bucket holding the instant `now - length` still counts, in full.
    since_ms = (to_ms(now - length) // width_ms) * width_ms
    since = _EPOCH + timedelta(milliseconds=since_ms)
    return Window(
        since=since,
        bucket=_EPOCH + timedelta(milliseconds=bucket_ms),
        resets_at=since + length + timedelta(milliseconds=width_ms),
    )


def _calendar_bounds(kind: str, local: datetime, calendar: Calendar) -> tuple[datetime, datetime]:
    zone = calendar.zone
    if kind == "hourly":
        start = local.replace(minute=0, second=0, microsecond=0)
        begin = start.astimezone(UTC)
        # Elapsed time, not wall time: in a DST fold (02:00-03:00 twice) the first 02:00
        # hour ends at the second 02:00, not at 03:00 two real hours later. A fold shorter
        # than an hour (Australia/Lord_Howe: 01:30-02:00 twice) is a window of its own,
        # from the end of the hour before it to the next top of the hour.
        end = begin + _HOUR
        wall = start.replace(tzinfo=None) + _HOUR  # the next top of the hour, either fold
        tops = [_local(wall, zone), wall.replace(tzinfo=zone, fold=1)]  # fold 1: if it exists
        top = min(
            (t.astimezone(UTC) for t in tops if t.astimezone(UTC) > local and _exists(t)),
            default=end,
        )
        if end <= local:  # in the repeated part of a short fold
            return end.astimezone(zone), top.astimezone(zone)
        return start, min(end, top).astimezone(zone)
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)
    if kind == "daily":
        return _local(midnight, zone), _local(midnight + timedelta(days=1), zone)
    if kind == "weekly":
        back = (midnight.weekday() - calendar.week_start) % 7
        first = midnight - timedelta(days=back)
        return _local(first, zone), _local(first + timedelta(days=7), zone)
    if kind == "monthly":
        first = _month_start(midnight, calendar.month_start_day)
        return _local(first, zone), _local(_next_month(first, calendar.month_start_day), zone)
    raise ValueError(f"not a calendar period: {kind}")


def _local(naive: datetime, zone: ZoneInfo) -> datetime:
    """A naive local wall time in ``zone`` (DST gaps resolve forward, folds to the first)."""
    aware = naive.replace(tzinfo=zone)
    round_trip = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
    if round_trip != naive:  # inside a DST gap: the wall time does not exist
        aware = (naive + timedelta(hours=1)).replace(tzinfo=zone)
    return aware


def _exists(moment: datetime) -> bool:
    """Whether an aware wall time is a real one (not inside a DST gap)."""
    back = moment.astimezone(UTC).astimezone(moment.tzinfo)
    return back.replace(tzinfo=None) == moment.replace(tzinfo=None)


def _month_start(day: datetime, start_day: int) -> datetime:
    if day.day >= start_day:
        return day.replace(day=start_day)
    previous = day.replace(day=1) - timedelta(days=1)
    return previous.replace(day=start_day)


def _next_month(first: datetime, start_day: int) -> datetime:
    year, month = (first.year + 1, 1) if first.month == 12 else (first.year, first.month + 1)
    return first.replace(year=year, month=month, day=start_day)


def _human(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
