"""Report periods: the text an operator types, turned into a half-open UTC range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from spendgate.clock import ManualClock
from spendgate.domain.reports import PERIOD_FORMS, parse_period
from spendgate.errors import InvalidRequest
from spendgate.services.reports import period_bounds

NOW = datetime(2026, 11, 29, 15, 30, 45, tzinfo=UTC)
MIDNIGHT = datetime(2026, 11, 29, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "since", "until"),
    [
        ("today", MIDNIGHT, NOW),
        ("yesterday", MIDNIGHT - timedelta(days=1), MIDNIGHT),
        ("24h", NOW - timedelta(hours=24), NOW),
        ("7d", NOW - timedelta(days=7), NOW),
        ("30d", NOW - timedelta(days=30), NOW),
        ("2w", NOW - timedelta(days=14), NOW),
        ("month", datetime(2026, 11, 1, tzinfo=UTC), NOW),
        ("all", datetime(1970, 1, 1, tzinfo=UTC), NOW),
        ("2026-11-01..2026-11-29", datetime(2026, 11, 1, tzinfo=UTC), MIDNIGHT + timedelta(days=1)),
        ("2026-11-03", datetime(2026, 11, 3, tzinfo=UTC), datetime(2026, 11, 4, tzinfo=UTC)),
        ("  Today ", MIDNIGHT, NOW),
        ("99999999d", datetime(1970, 1, 1, tzinfo=UTC), NOW),
        ("9999-12-30", datetime(9999, 12, 30, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)),
    ],
)
def test_periods(text: str, since: datetime, until: datetime) -> None:
    assert parse_period(text, NOW) == (since, until)


def test_days_are_utc_days_whatever_the_zone_of_now() -> None:
    # 01:00 on Nov 30 in UTC+5 is 20:00 on Nov 29 UTC: "today" is still Nov 29.
    local_now = datetime(2026, 11, 30, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    since, until = parse_period("today", local_now)
    assert (since, until) == (MIDNIGHT, local_now)
    assert since.tzinfo is UTC


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "unknown period ''"),
        ("last week", "unknown period 'last week'; use one of: today, yesterday"),
        ("7x", "unknown period '7x'"),
        ("0d", "period '0d' is empty"),
        ("2026-13-01", "unknown period '2026-13-01'"),
        ("2026-11-30..2026-11-01", "period '2026-11-30..2026-11-01' ends before it starts"),
        ("2026-11-01..", "unknown period '2026-11-01..'"),
        # the day after 9999-12-31 is past what a datetime holds (was an OverflowError: a 500)
        ("9999-12-31", "period '9999-12-31' ends after 9999-12-30, the last day a report"),
        ("2026-01-01..9999-12-31", "period '2026-01-01..9999-12-31' ends after 9999-12-30"),
    ],
)
def test_bad_periods_say_what_is_accepted(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        parse_period(text, NOW)


def test_naive_now_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_period("today", datetime(2026, 11, 29, 12))


@pytest.mark.parametrize("text", ["last week", "0d", "2026-11-30..2026-11-01", "9999-12-31"])
def test_a_report_refusing_a_period_lists_the_periods_once(text: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        period_bounds(ManualClock(NOW), text)
    assert refused.value.message.count(PERIOD_FORMS) == 1
    assert refused.value.message.count("today, yesterday") == 1
