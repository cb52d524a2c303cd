"""Usage reports: one query path behind both ``spendgate usage`` and ``GET /admin/usage``."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum
from typing import TypeVar

from spendgate.clock import Clock
from spendgate.domain.identity import ApiKey
from spendgate.domain.refusals import (
    DEFAULT_OUTPUT_TOKENS,
    RECENT_OUTPUTS,
    RETRY_WINDOW,
    RefusalGroup,
)
from spendgate.domain.reports import (
    PERIOD_FORMS,
    Callers,
    TopSpenders,
    callers_json,
    dollars,
    parse_period,
    rank_users,
    to_json,
    top_spenders,
)
from spendgate.domain.totals import Bucket, UsagePoint
from spendgate.errors import InvalidRequest
from spendgate.storage import GroupBy, Storage, UsageGroup, UsageQuery
from spendgate.text import csv_cell

E = TypeVar("E", bound=Enum)

GROUP_BY_CHOICES = tuple(g.value for g in GroupBy)
BUCKET_CHOICES = tuple(b.value for b in Bucket)


@dataclass(frozen=True, slots=True)
class UsageReport:
    group_by: GroupBy
    period: str
    since: datetime
    until: datetime
    groups: list[UsageGroup]
    top: TopSpenders  # by user: users only (`callers` has the rest)
    callers: Callers | None = None  # by user: services apart, shares over every caller

    @property
    def all_cost_nanos(self) -> int:
        return sum(g.cost_nanos for g in self.groups)

    def to_json(self) -> dict[str, object]:
        body = to_json(self.top) if self.callers is None else callers_json(self.top, self.callers)
        return {
            "group_by": self.group_by.value,
            "period": self.period,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            **body,
        }


def parse_choice(choices: type[E], value: str, param: str = "group_by") -> E:
    """``value`` as a member of the enum ``choices``, or an error naming the valid ones."""
    try:
        return choices(value)
    except ValueError:
        valid = ", ".join(str(member.value) for member in choices)
        raise InvalidRequest(
            f"{param} must be one of {valid}, not {value!r}", param=param
        ) from None


def period_bounds(clock: Clock, period: str) -> tuple[datetime, datetime]:
    now = clock.now()
    try:
        since, until = parse_period(period, now)
    except ValueError as exc:
        message = str(exc)  # names the periods accepted once, whichever check refused it
        if PERIOD_FORMS not in message:
            message = f"{message} (periods: {PERIOD_FORMS})"
        raise InvalidRequest(message, param="period") from None
    if until >= now:
        # "to date" periods include the request that finished this very millisecond.
        until = now + timedelta(milliseconds=1)
    return since, until


async def blocks_report(storage: Storage, clock: Clock, *, period: str) -> dict[str, object]:
    """What each budget, limit, loop detector and breaker stopped (and what shadow limits
    would have stopped) over a period: refusals and the distinct requests among them, their
    worst case and a realistic estimate of what they would have cost
    (`spendgate.domain.refusals`)."""
    since, until = period_bounds(clock, period)
    groups = await storage.blocks(since, until)
    estimated = await storage.refusal_estimates(since, until)

    def figures(found: RefusalGroup) -> dict[str, object]:
        return {
            "requests": found.distinct,
            "requests_worst_case_nanos": found.distinct_worst_case_nanos,
            "requests_worst_case_usd": dollars(found.distinct_worst_case_nanos),
            "estimate_nanos": found.estimate_nanos,
            "estimate_usd": dollars(found.estimate_nanos),
        }

    total = RefusalGroup(
        "",
        distinct=sum(g.distinct for g in estimated.values()),
        distinct_worst_case_nanos=sum(g.distinct_worst_case_nanos for g in estimated.values()),
        estimate_nanos=sum(g.estimate_nanos for g in estimated.values()),
    )
    return {
        "period": period,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "blocked": sum(g.blocked for g in groups),
        "blocked_would_cost_nanos": sum(g.blocked_would_cost_nanos for g in groups),
        "blocked_would_cost_usd": dollars(sum(g.blocked_would_cost_nanos for g in groups)),
        **figures(total),
        "estimate_basis": {
            "default_output_tokens": DEFAULT_OUTPUT_TOKENS,
            "recent_outputs": RECENT_OUTPUTS,
            "retry_window_s": RETRY_WINDOW.total_seconds(),
        },
        "overruns": sum(g.overruns for g in groups),
        "data": [
            {
                "name": g.name,
                "blocked": g.blocked,
                "blocked_would_cost_nanos": g.blocked_would_cost_nanos,
                "blocked_would_cost_usd": dollars(g.blocked_would_cost_nanos),
                **figures(estimated.get(g.name, RefusalGroup(g.name))),
                "shadow_hits": g.shadow_hits,
                "shadow_cost_nanos": g.shadow_cost_nanos,
                "shadow_cost_usd": dollars(g.shadow_cost_nanos),
                "retryable": g.retryable,
                "overruns": g.overruns,
                "overrun_cost_nanos": g.overrun_cost_nanos,
                "overrun_cost_usd": dollars(g.overrun_cost_nanos),
            }
            for g in groups
        ],
    }


async def usage_report(
    storage: Storage, clock: Clock, *, group_by: str, period: str, top: int
) -> UsageReport:
    grouping = parse_choice(GroupBy, group_by)
    if top < 0:
        raise InvalidRequest("top must be 0 or more", param="top")
    since, until = period_bounds(clock, period)
    groups = await storage.usage(UsageQuery(group_by=grouping, since=since, until=until))
    if grouping is GroupBy.USER:
        ranked, callers = rank_users(groups, top, await _service_keys(storage, since, until))
        return UsageReport(grouping, period, since, until, groups, ranked, callers)
    return UsageReport(
        group_by=grouping,
        period=period,
        since=since,
        until=until,
        groups=groups,
        top=top_spenders(groups, top),
    )


async def _service_keys(storage: Storage, since: datetime, until: datetime) -> int:
    """How many keys without a user sent traffic (served or refused) over the period."""
    by_key = await storage.usage(UsageQuery(group_by=GroupBy.KEY, since=since, until=until))
    keys = {key.id: key for key in await storage.list_keys(include_revoked=True)}
    return sum(
        1
        for g in by_key
        if g.group is not None and (g.requests or g.blocked) and _no_user(keys.get(g.group))
    )


def _no_user(key: ApiKey | None) -> bool:
    return key is not None and key.user is None


async def usage_series_report(
    storage: Storage, clock: Clock, *, group_by: str, period: str, bucket: str
) -> dict[str, object]:
    """Usage per UTC hour or day and per group over a period, for charts: each point's
    bucket start, group, cost, requests served and tokens (the first bucket may start
    before the period does; only the period's rows count)."""
    grouping = parse_choice(GroupBy, group_by)
    size = parse_choice(Bucket, bucket, param="bucket")
    since, until = period_bounds(clock, period)
    points = await storage.usage_series(since, until, size, grouping)
    return {
        "group_by": grouping.value,
        "period": period,
        "since": since.isoformat(),
        "until": until.isoformat(),
        "bucket": size.value,
        "series": [point_json(p) for p in points],
    }


def point_json(point: UsagePoint) -> dict[str, object]:
    return {
        "start": point.start.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "group": point.group,
        "cost_usd": dollars(point.cost_nanos),
        "cost_nanos": point.cost_nanos,
        "requests": point.requests,
        "blocked": point.blocked,
        "input_tokens": point.input_tokens,
        "output_tokens": point.output_tokens,
    }


SERIES_CSV_HEADER = (
    "start",
    "group",
    "cost_usd",
    "requests",
    "blocked",
    "input_tokens",
    "output_tokens",
)


def series_csv(series: dict[str, object]) -> str:
    """A `usage_series_report` as CSV: a header, then one line per point in its order (the
    group cell escaped as `spendgate.domain.reports.to_csv` escapes it; no group: empty)."""
    points = series["series"]
    assert isinstance(points, list)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(SERIES_CSV_HEADER)
    for point in points:
        group = point["group"]
        writer.writerow(
            [point["start"], csv_cell(group or ""), *(point[k] for k in SERIES_CSV_HEADER[2:])]
        )
    return out.getvalue()
