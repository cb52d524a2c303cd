"""Forecast arithmetic with an injected clock, in integer nano-dollars."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from spendgate.clock import ManualClock
from spendgate.domain.forecast import forecast

MONTH_START = datetime(2026, 3, 1, tzinfo=UTC)
MONTH_END = datetime(2026, 4, 1, tzinfo=UTC)
DOLLAR = 1_000_000_000
HOUR = timedelta(hours=1)


def test_burn_rate_projection_and_cap_time() -> None:
    clock = ManualClock(MONTH_START)
    clock.advance(10 * 24 * 3600)  # 10 days in: March 11, 00:00
    now = clock.now()
    # $40 spent this month, $2 of it in the last hour: $2/h; 21 days (504 h) left.
    found = forecast(
        spent=40 * DOLLAR,
        limit=100 * DOLLAR,
        recent=2 * DOLLAR,
        window=HOUR,
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert found.burn_per_hour == 2 * DOLLAR
    assert found.observed_ms == 3_600_000
    assert found.projected == 40 * DOLLAR + 504 * 2 * DOLLAR
    assert found.cap_at == now + timedelta(hours=30)  # $60 left at $2/h
    assert found.exceeds


def test_a_slow_burn_does_not_exceed() -> None:
    now = MONTH_START + timedelta(days=30)  # one day (24 h) left
    found = forecast(
        spent=50 * DOLLAR,
        limit=100 * DOLLAR,
        recent=DOLLAR,  # $1/h: $24 more by the reset
        window=HOUR,
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert found.projected == 74 * DOLLAR
    assert found.cap_at == now + timedelta(hours=50)
    assert not found.exceeds


def test_the_window_is_cut_at_the_period_start_and_rounds_up() -> None:
    clock = ManualClock(MONTH_START)
    clock.advance(20 * 60)  # 20 minutes into the month: the window measured is 20 min
    now = clock.now()
    found = forecast(
        spent=7,
        limit=1_000,
        recent=7,
        window=HOUR,
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert found.observed_ms == 20 * 60 * 1000
    assert found.burn_per_hour == 21
    remaining_ms = (MONTH_END - now) // timedelta(milliseconds=1)
    assert found.projected == 7 + -(-7 * remaining_ms // (20 * 60 * 1000))
    # 993 left at 7 per 20 min: ceil(993 * 1_200_000 / 7) ms
    assert found.cap_at == now + timedelta(milliseconds=-(-993 * 1_200_000 // 7))


def test_nothing_spent_lately_never_reaches_the_cap() -> None:
    now = MONTH_START + timedelta(days=3)
    found = forecast(
        spent=10,
        limit=100,
        recent=0,
        window=HOUR,
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert (found.burn_per_hour, found.projected, found.cap_at, found.exceeds) == (
        0,
        10,
        None,
        False,
    )


def test_spent_past_the_limit_is_at_the_cap_now() -> None:
    now = MONTH_START + timedelta(days=3)
    found = forecast(
        spent=120,
        limit=100,
        recent=5,
        window=HOUR,
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert found.cap_at == now
    assert found.exceeds


def test_a_period_without_an_end_projects_no_end() -> None:
    now = MONTH_START
    found = forecast(
        spent=10,
        limit=100,
        recent=10,
        window=HOUR,
        now=now,
        since=now - timedelta(days=400),
        resets_at=None,
    )
    assert found.projected is None
    assert found.cap_at == now + timedelta(hours=9)
    assert not found.exceeds


def test_a_cap_past_the_last_representable_time_is_never() -> None:
    # $1,000 a month, 20 nano-dollars (one short embedding) in the last hour: the cap is
    # 1.8e17 ms away, past the year 9999 (it overflowed `datetime` and failed every view).
    now = MONTH_START + timedelta(days=3)
    found = forecast(
        spent=20,
        limit=1_000 * DOLLAR,
        recent=20,
        window=HOUR,
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert (found.burn_per_hour, found.cap_at, found.exceeds) == (20, None, False)
    assert found.projected == 20 + 20 * ((MONTH_END - now) // HOUR)
    # just inside the calendar's end it is still a time
    near = forecast(
        spent=0,
        limit=(datetime(9999, 1, 1, tzinfo=UTC) - now) // timedelta(milliseconds=1),
        recent=1,
        window=timedelta(milliseconds=1),
        now=now,
        since=MONTH_START,
        resets_at=MONTH_END,
    )
    assert near.cap_at == datetime(9999, 1, 1, tzinfo=UTC)
