"""Budget windows: calendar periods in the configured zone (across DST), week start, month
start day, rolling windows and their error bound, all driven by an injected clock."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.clock import ManualClock
from spendgate.domain.periods import ROLLING_BUCKETS, Calendar, Period, Window, to_ms, window

BERLIN = ZoneInfo("Europe/Berlin")
LA = ZoneInfo("America/Los_Angeles")


def at(zone: ZoneInfo, *parts: int, fold: int = 0) -> datetime:
    """A local wall time in ``zone``, as the UTC instant a clock would report."""
    return datetime(*parts, tzinfo=zone, fold=fold).astimezone(UTC)  # type: ignore[misc]


def local_window(period: str, clock: ManualClock, calendar: Calendar) -> tuple[datetime, ...]:
    span = window(Period.parse(period), clock.now(), calendar)
    assert span.resets_at is not None
    return span.since.astimezone(calendar.zone), span.resets_at.astimezone(calendar.zone)


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("rolling:24h", timedelta(hours=24)),
        ("rolling:7d", timedelta(days=7)),
        ("rolling:90m", timedelta(minutes=90)),
    ],
)
def test_rolling_periods_parse(text: str, length: timedelta) -> None:
    assert Period.parse(text) == Period("rolling", length)


@pytest.mark.parametrize("text", ["yearly", "rolling:0h", "rolling:5s", "rolling:h", ""])
def test_unknown_periods_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="unknown period"):
        Period.parse(text)


@pytest.mark.parametrize("text", ["rolling:3651d", "rolling:17520000h", "rolling:999999999999d"])
def test_a_rolling_period_longer_than_ten_years_is_refused(text: str) -> None:
    """``rolling:17520000h`` (2,000 years) was accepted, and then every window of it
    overflowed `datetime`: each request of a key with that budget, and every listing of
    the budgets, was a 500; ``rolling:999999999999d`` overflowed `timedelta` on parsing."""
    with pytest.raises(ValueError, match=r"at most rolling:3650d \(10 years\); use lifetime"):
        Period.parse(text)


def test_the_longest_rolling_period_has_a_window() -> None:
    longest = Period.parse("rolling:3650d")
    assert longest.length == timedelta(days=3650)
    span = window(longest, datetime(2026, 3, 10, tzinfo=UTC), Calendar.of("UTC"))
    assert span.since < datetime(2016, 3, 13, tzinfo=UTC)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        window(Period("daily"), datetime(2026, 1, 1), Calendar.of("UTC"))


def test_lifetime_never_resets() -> None:
    span = window(Period.parse("lifetime"), datetime(2026, 5, 1, tzinfo=UTC), Calendar.of("UTC"))
    assert span.since_ms == span.bucket_ms == 0
    assert span.resets_at is None


# ---------------------------------------------------------------------------- calendar


def test_monthly_resets_at_local_midnight_in_berlin() -> None:
    calendar = Calendar.of("Europe/Berlin")
    clock = ManualClock(at(BERLIN, 2026, 3, 31, 23, 59))
    since, resets = local_window("monthly", clock, calendar)
    assert since == datetime(2026, 3, 1, tzinfo=BERLIN)
    assert resets == datetime(2026, 4, 1, tzinfo=BERLIN)
    # March 1 is CET (+01:00), April 1 is CEST (+02:00): the UTC instants differ by offset.
    assert since.utcoffset() == timedelta(hours=1)
    assert resets.utcoffset() == timedelta(hours=2)
    assert window(Period("monthly"), clock.now(), calendar).resets_at == datetime(
        2026, 3, 31, 22, 0, tzinfo=UTC
    )

    before = window(Period("monthly"), clock.now(), calendar)
    clock.advance(60)  # 00:00 local on April 1 = 22:00 UTC on March 31
    after = window(Period("monthly"), clock.now(), calendar)
    assert after.bucket_ms > before.bucket_ms
    assert after.since == before.resets_at
    assert clock.now().date().isoformat() == "2026-03-31"  # still March in UTC


def test_daily_windows_are_23_and_25_hours_across_dst_in_berlin() -> None:
    calendar = Calendar.of("Europe/Berlin")
    spring = window(Period("daily"), at(BERLIN, 2026, 3, 29, 12, 0), calendar)
    autumn = window(Period("daily"), at(BERLIN, 2026, 10, 25, 12, 0), calendar)
    assert spring.resets_at is not None
    assert autumn.resets_at is not None
    assert spring.resets_at - spring.since == timedelta(hours=23)
    assert autumn.resets_at - autumn.since == timedelta(hours=25)
    assert spring.since == at(BERLIN, 2026, 3, 29, 0, 0)


def test_hourly_through_the_spring_gap_in_los_angeles() -> None:
    """2026-03-08 02:00 PST jumps to 03:00 PDT: the 01:00 hour ends at 03:00 local."""
    calendar = Calendar.of("America/Los_Angeles")
    clock = ManualClock(at(LA, 2026, 3, 8, 1, 30))
    assert local_window("hourly", clock, calendar) == (
        datetime(2026, 3, 8, 1, 0, tzinfo=LA),
        datetime(2026, 3, 8, 3, 0, tzinfo=LA),
    )
    clock.advance(30 * 60)
    since, resets = local_window("hourly", clock, calendar)
    assert since == datetime(2026, 3, 8, 3, 0, tzinfo=LA)
    assert resets.astimezone(UTC) - since.astimezone(UTC) == timedelta(hours=1)


def test_hourly_through_the_autumn_fold_in_berlin() -> None:
    """2026-10-25 02:00-03:00 happens twice (CEST, then CET): two separate hours."""
    calendar = Calendar.of("Europe/Berlin")
    first = window(Period("hourly"), at(BERLIN, 2026, 10, 25, 2, 30, fold=0), calendar)
    second = window(Period("hourly"), at(BERLIN, 2026, 10, 25, 2, 30, fold=1), calendar)
    assert second.since - first.since == timedelta(hours=1)
    assert first.resets_at == second.since  # not 03:00 CET, two real hours later
    assert second.resets_at == at(BERLIN, 2026, 10, 25, 3, 0)


def test_daily_in_los_angeles_across_the_autumn_change() -> None:
    calendar = Calendar.of("America/Los_Angeles")
    clock = ManualClock(at(LA, 2026, 11, 1, 23, 30))  # PST after the fall back at 02:00
    since, resets = local_window("daily", clock, calendar)
    assert (since, resets) == (
        datetime(2026, 11, 1, tzinfo=LA),
        datetime(2026, 11, 2, tzinfo=LA),
    )
    assert resets.astimezone(UTC) - since.astimezone(UTC) == timedelta(hours=25)
    clock.advance(31 * 60)  # 00:01 on Nov 2, still Nov 2 08:01 UTC
    assert local_window("daily", clock, calendar)[0] == datetime(2026, 11, 2, tzinfo=LA)


@pytest.mark.parametrize(
    ("week_start", "day", "expected_start"),
    [
        ("monday", 4, 2),  # Wednesday Nov 4 2026 -> Monday Nov 2
        ("sunday", 4, 1),  # -> Sunday Nov 1
        ("sunday", 1, 1),  # a Sunday is its own week start
        ("sunday", 7, 1),  # Saturday -> previous Sunday
        ("sunday", 8, 8),  # next Sunday
    ],
)
def test_weekly_with_a_configured_week_start(
    week_start: str, day: int, expected_start: int
) -> None:
    calendar = Calendar.of("America/Los_Angeles", week_start=week_start)
    since, resets = local_window("weekly", ManualClock(at(LA, 2026, 11, day, 9, 0)), calendar)
    assert since == datetime(2026, 11, expected_start, tzinfo=LA)
    assert resets == since + timedelta(days=7)  # wall clock: DST-safe in the local zone


def test_weekly_sunday_start_across_dst_is_169_hours() -> None:
    calendar = Calendar.of("America/Los_Angeles", week_start="sunday")
    span = window(Period("weekly"), at(LA, 2026, 11, 3, 12, 0), calendar)
    assert span.since == at(LA, 2026, 11, 1, 0, 0)
    assert span.resets_at == at(LA, 2026, 11, 8, 0, 0)
    assert span.resets_at - span.since == timedelta(hours=169)


@pytest.mark.parametrize(
    ("now", "start", "end"),
    [
        ((2026, 11, 14, 23, 59), (2026, 10, 15), (2026, 11, 15)),
        ((2026, 11, 15, 0, 0), (2026, 11, 15), (2026, 12, 15)),
        ((2026, 12, 20, 8, 0), (2026, 12, 15), (2027, 1, 15)),
        ((2027, 1, 3, 8, 0), (2026, 12, 15), (2027, 1, 15)),
        ((2026, 3, 20, 8, 0), (2026, 3, 15), (2026, 4, 15)),  # spans the DST change
    ],
)
def test_monthly_with_month_start_day_15(
    now: tuple[int, ...], start: tuple[int, ...], end: tuple[int, ...]
) -> None:
    calendar = Calendar.of("Europe/Berlin", month_start_day=15)
    since, resets = local_window("monthly", ManualClock(at(BERLIN, *now)), calendar)
    assert since == datetime(*start, tzinfo=BERLIN)  # type: ignore[misc]
    assert resets == datetime(*end, tzinfo=BERLIN)  # type: ignore[misc]


def test_a_calendar_window_is_one_bucket() -> None:
    span = window(Period("monthly"), datetime(2026, 6, 9, tzinfo=UTC), Calendar.of("UTC"))
    assert span.bucket == span.since == datetime(2026, 6, 1, tzinfo=UTC)


# ---------------------------------------------------------------------------- rolling


def _rolling(length: str, clock: ManualClock) -> Window:
    return window(Period.parse(length), clock.now(), Calendar.of("UTC"))


def test_rolling_bucket_width_and_bounds() -> None:
    clock = ManualClock(datetime(2026, 6, 1, 10, 7, 30, tzinfo=UTC))
    span = _rolling("rolling:24h", clock)
    width = timedelta(hours=24) / ROLLING_BUCKETS  # one hour
    assert span.bucket == datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
    assert span.since == datetime(2026, 5, 31, 10, 0, tzinfo=UTC)  # holds now - 24h
    assert span.resets_at == span.since + timedelta(hours=24) + width
    assert to_ms(span.bucket) % to_ms(datetime(1970, 1, 1, 1, tzinfo=UTC)) == 0


def test_short_rolling_windows_use_one_minute_buckets() -> None:
    clock = ManualClock(datetime(2026, 6, 1, 10, 7, 30, tzinfo=UTC))
    span = _rolling("rolling:10m", clock)  # 10m / 24 < 1 minute
    assert span.bucket == datetime(2026, 6, 1, 10, 7, tzinfo=UTC)
    assert span.since == datetime(2026, 6, 1, 9, 57, tzinfo=UTC)


def test_rolling_error_bound_is_one_bucket_on_the_side_of_counting() -> None:
    """Spend older than the window by less than a bucket still counts; older does not."""
    clock = ManualClock(datetime(2026, 6, 1, 0, 0, tzinfo=UTC))
    spent_in = _rolling("rolling:24h", clock).bucket_ms  # bucket 00:00-01:00 on June 1
    width = timedelta(hours=1)

    def counts() -> bool:
        return spent_in >= _rolling("rolling:24h", clock).since_ms

    clock.set(datetime(2026, 6, 2, 0, 0, tzinfo=UTC))  # exactly 24h later: still in
    assert counts()
    clock.set(datetime(2026, 6, 2, 0, 59, tzinfo=UTC))  # 24h59m after the bucket began
    assert counts()
    assert _rolling("rolling:24h", clock).resets_at == datetime(2026, 6, 2, 1, 0, tzinfo=UTC)
    clock.set(datetime(2026, 6, 2, 0, 0, tzinfo=UTC) + width)  # all of it older than 24h
    assert not counts()


def test_rolling_window_slides_with_the_clock() -> None:
    clock = ManualClock(datetime(2026, 6, 1, 0, 0, tzinfo=UTC))
    seen = []
    for _ in range(5):
        seen.append(_rolling("rolling:90m", clock))
        clock.advance(225)  # 90m / 24 = 3m45s: one bucket per step
    buckets = [span.bucket_ms for span in seen]
    assert buckets == sorted(set(buckets))
    assert all(b - a == 225_000 for a, b in itertools.pairwise(buckets))
    assert all(span.bucket_ms - span.since_ms == 90 * 60_000 for span in seen)


# ---------------------------------------------------------------------------- tiling

LORD_HOWE = ZoneInfo("Australia/Lord_Howe")  # DST of 30 minutes: short gaps and folds
_TILING_ZONES = (
    "America/New_York",
    "Europe/Berlin",
    "America/Santiago",  # midnight does not exist on its spring day
    "America/Havana",  # midnight exists twice on its autumn day
    "Asia/Beirut",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "Antarctica/Troll",  # DST of two hours
)


def test_hourly_through_the_half_hour_fold_on_lord_howe() -> None:
    """DST ends at 02:00 (+11) back to 01:30 (+10:30): 01:30-02:00 happens twice. The
    hours tile time: the repeated half hour is a window of its own, not a second window
    overlapping the first 01:00 hour."""
    calendar = Calendar(LORD_HOWE)
    first = at(LORD_HOWE, 2022, 4, 3, 1, 10)
    again = at(LORD_HOWE, 2022, 4, 3, 1, 40, fold=1)
    one = window(Period("hourly"), first, calendar)
    two = window(Period("hourly"), again, calendar)
    assert one.resets_at == at(LORD_HOWE, 2022, 4, 3, 1, 30, fold=1)
    assert two.since == one.resets_at  # not 01:00 (+10:30), inside the first hour
    assert two.resets_at == at(LORD_HOWE, 2022, 4, 3, 2, 0)
    assert one.since <= first < one.resets_at
    assert two.since <= again < two.resets_at


@settings(max_examples=400, deadline=None)
@given(
    zone=st.sampled_from(_TILING_ZONES),
    kind=st.sampled_from(("hourly", "daily", "weekly", "monthly")),
    week_start=st.sampled_from(("monday", "sunday")),
    month_start_day=st.integers(min_value=1, max_value=28),
    moment=st.datetimes(
        min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)
    ),
)
def test_calendar_windows_tile_time(
    zone: str, kind: str, week_start: str, month_start_day: int, moment: datetime
) -> None:
    """Each instant lies in its window; the next window starts where it ends and the
    previous one ends where it starts: no gap, no overlap, across DST in any zone."""
    calendar = Calendar.of(zone, week_start, month_start_day)
    span = window(Period(kind), moment, calendar)
    assert span.resets_at is not None
    assert span.since <= moment < span.resets_at
    assert window(Period(kind), span.resets_at, calendar).since == span.resets_at
    tiny = timedelta(microseconds=1)
    assert window(Period(kind), span.since - tiny, calendar).resets_at == span.since
