"""Usage totals per group over a period: the shape reports are computed from. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields
from datetime import datetime
from enum import Enum

from spendgate.clock import from_ms, to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.errors import BUDGET_EXHAUSTED


class GroupBy(Enum):
    TEAM = "team"
    SERVICE = "service"
    USER = "user"
    KEY = "key"
    MODEL = "model"
    ORG = "org"
    PROVIDER = "provider"


@dataclass(frozen=True, slots=True)
class UsageQuery:
    group_by: GroupBy
    since: datetime
    until: datetime


@dataclass(frozen=True, slots=True)
class UsageGroup:
    group: str | None
    requests: int
    input_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    output_tokens: int
    reasoning_tokens: int
    cost_nanos: int
    errors: int  # requests that reached an upstream and failed
    estimated: int
    blocked: int = 0  # requests refused by a budget, limit or breaker (not in `requests`)
    blocked_would_cost_nanos: int = 0  # what the refused requests' worst cases add up to
    retries: int = 0  # requests that were an SDK's retry (x-stainless-retry-count > 0)
    retry_cost_nanos: int = 0  # what those retries cost


@dataclass(frozen=True, slots=True)
class BlockGroup:
    """What one budget, limit or breaker stopped over a period, and what shadow ones would
    have stopped: refused requests and their worst-case cost (what blocking saved)."""

    name: str
    blocked: int
    blocked_would_cost_nanos: int
    shadow_hits: int
    shadow_cost_nanos: int  # the real cost of the requests a shadow limit let through
    retryable: int = 0  # of the blocked: told to retry (`told_to_retry`)
    overruns: int = 0  # requests charged more on this budget than they had reserved
    overrun_cost_nanos: int = 0  # ... and their cost


_GROUP_FIELDS = {
    GroupBy.TEAM: "team",
    GroupBy.SERVICE: "service",
    GroupBy.USER: "user",
    GroupBy.KEY: "key_id",
    GroupBy.MODEL: "served_model",
    GroupBy.ORG: "org",
    GroupBy.PROVIDER: "provider",
}


def usage_totals(rows: Iterable[LedgerRow], group_by: GroupBy) -> list[UsageGroup]:
    """Fold ledger rows into `UsageGroup`s, highest cost first, ties by name (no group
    last): the reference every backend's summing must equal."""
    field = _GROUP_FIELDS[group_by]
    sums: dict[str | None, list[int]] = {}
    for row in rows:
        served = row.blocked_by is None
        retry = row.retry_count > 0
        values = (
            int(served),
            row.input_tokens,
            row.cached_input_tokens,
            row.cache_write_tokens,
            row.output_tokens,
            row.reasoning_tokens,
            row.cost_nanos,
            int(served and row.status >= 400),
            int(row.usage_estimated),
            int(not served),
            row.would_cost_nanos,
            int(served and retry),
            row.cost_nanos if retry else 0,
        )
        total = sums.setdefault(getattr(row, field), [0] * len(values))
        for index, value in enumerate(values):
            total[index] += value
    groups = [UsageGroup(name, *values) for name, values in sums.items()]
    groups.sort(key=lambda g: (-g.cost_nanos, g.group is None, g.group or ""))
    return groups


RETRY_STATUS = 429  # a refusal the client is told to retry, unless it is one of these:
LOOP_DETECTOR = "loop-detection"  # `spendgate.domain.budgets.loop_detector`'s name


def told_to_retry(row: LedgerRow) -> bool:
    """Whether a refusal's answer told the client to retry: a ``429`` of a rate limit or of
    a budget whose room requests in flight hold. A budget with nothing left answers OpenAI
    and Gemini clients ``429`` too (``insufficient_quota``), and loop detection answers
    ``429`` in every dialect, both with ``x-should-retry: false``: not counted. (A rate
    limit's ``429`` past `spendgate.errors.MAX_RETRY_AFTER_S` is, though not retryable.)
    Backends sum it in SQL as `told_to_retry_sql` writes it."""
    return (
        row.status == RETRY_STATUS
        and row.blocked_by != LOOP_DETECTOR
        and not (row.error or "").startswith(BUDGET_EXHAUSTED)
    )


def told_to_retry_sql(prefix: str = "") -> str:
    """`told_to_retry` as a SQL condition on a ledger row (SQLite and PostgreSQL)."""
    return (
        f"({prefix}status = {RETRY_STATUS} AND {prefix}blocked_by <> '{LOOP_DETECTOR}' AND "
        f"substr(COALESCE({prefix}error, ''), 1, {len(BUDGET_EXHAUSTED)}) <> "
        f"'{BUDGET_EXHAUSTED}')"
    )


def block_totals(rows: Iterable[LedgerRow]) -> list[BlockGroup]:
    """Fold ledger rows into what each budget, limit or breaker refused (and each shadow
    limit would have), by name."""
    found: dict[str, list[int]] = {}
    for row in rows:
        if row.blocked_by is not None:
            counts = found.setdefault(row.blocked_by, [0] * 7)
            counts[0] += 1
            counts[1] += row.would_cost_nanos
            counts[4] += told_to_retry(row)
        for name in row.shadow_blocks:
            counts = found.setdefault(name, [0] * 7)
            counts[2] += 1
            counts[3] += row.cost_nanos
        for name in row.settled_above:
            counts = found.setdefault(name, [0] * 7)
            counts[5] += 1
            counts[6] += row.cost_nanos
    return [BlockGroup(name, *counts) for name, counts in sorted(found.items())]


def merge_usage(*parts: Iterable[UsageGroup]) -> list[UsageGroup]:
    """Sum `UsageGroup`s of the same group from several parts of a period (rollups and the
    raw rows at its edges), in `usage_totals`' order."""
    sums: dict[str | None, list[int]] = {}
    for part in parts:
        for g in part:
            values = [getattr(g, name) for name in _USAGE_SUMS]
            total = sums.setdefault(g.group, [0] * len(values))
            for index, value in enumerate(values):
                total[index] += value
    groups = [UsageGroup(name, *values) for name, values in sums.items()]
    groups.sort(key=lambda g: (-g.cost_nanos, g.group is None, g.group or ""))
    return groups


def merge_blocks(*parts: Iterable[BlockGroup]) -> list[BlockGroup]:
    """Sum `BlockGroup`s of the same name from several parts of a period, by name."""
    sums: dict[str, list[int]] = {}
    for part in parts:
        for g in part:
            values = [getattr(g, name) for name in _BLOCK_SUMS]
            total = sums.setdefault(g.name, [0] * len(values))
            for index, value in enumerate(values):
                total[index] += value
    return [BlockGroup(name, *values) for name, values in sorted(sums.items())]


_USAGE_SUMS = tuple(f.name for f in fields(UsageGroup))[1:]
_BLOCK_SUMS = tuple(f.name for f in fields(BlockGroup))[1:]

# ---------------------------------------------------------------------------- series

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class Bucket(Enum):
    HOUR = "hour"
    DAY = "day"

    @property
    def ms(self) -> int:
        return HOUR_MS if self is Bucket.HOUR else DAY_MS


@dataclass(frozen=True, slots=True)
class UsagePoint:
    """One group's usage in one time bucket (UTC hours or days) of a series."""

    start: datetime  # the bucket's start (the first may start before the period does)
    group: str | None
    requests: int  # served (refused ones are in `blocked`)
    input_tokens: int
    output_tokens: int
    cost_nanos: int
    blocked: int = 0


def bucket_of(ts_ms: int, bucket: Bucket) -> int:
    """The start (epoch ms) of the bucket holding ``ts_ms``: UTC hours and days."""
    return ts_ms - ts_ms % bucket.ms


def whole_hours(since_ms: int, until_ms: int) -> tuple[int, int] | None:
    """The whole UTC hours inside ``[since_ms, until_ms)`` as ``[first, end)``, or None if
    it holds none: the part of a period that hourly rollups answer."""
    first = -(-since_ms // HOUR_MS) * HOUR_MS
    end = until_ms // HOUR_MS * HOUR_MS
    return (first, end) if first < end else None


def series_order(points: Iterable[UsagePoint]) -> list[UsagePoint]:
    """Oldest bucket first; in a bucket, highest cost first, ties by name (no group last)."""
    return sorted(points, key=lambda p: (p.start, -p.cost_nanos, p.group is None, p.group or ""))


def merge_series(*parts: Iterable[UsagePoint]) -> list[UsagePoint]:
    """Sum points of the same bucket and group from several parts of a period."""
    sums: dict[tuple[datetime, str | None], list[int]] = {}
    for part in parts:
        for p in part:
            values = [p.requests, p.input_tokens, p.output_tokens, p.cost_nanos, p.blocked]
            total = sums.setdefault((p.start, p.group), [0] * len(values))
            for index, value in enumerate(values):
                total[index] += value
    return series_order(UsagePoint(start, group, *v) for (start, group), v in sums.items())


def usage_series(rows: Iterable[LedgerRow], group_by: GroupBy, bucket: Bucket) -> list[UsagePoint]:
    """Fold ledger rows into points per bucket and group: the reference every backend's
    series must equal."""
    field = _GROUP_FIELDS[group_by]
    sums: dict[tuple[int, str | None], list[int]] = {}
    for row in rows:
        served = row.blocked_by is None
        key = (bucket_of(to_ms(row.ts), bucket), getattr(row, field))
        total = sums.setdefault(key, [0] * 5)
        total[0] += served
        total[1] += row.input_tokens
        total[2] += row.output_tokens
        total[3] += row.cost_nanos
        total[4] += not served
    return series_order(
        UsagePoint(from_ms(start), group, *values) for (start, group), values in sums.items()
    )
