"""Usage totals per group over a period: the shape reports are computed from. Pure."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from spendgate.domain.ledger import LedgerRow


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
    retryable: int = 0  # of the blocked: told to retry (429: a rate limit, a budget's line)
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


RETRY_STATUS = 429  # a refusal the client is told to retry


def block_totals(rows: Iterable[LedgerRow]) -> list[BlockGroup]:
    """Fold ledger rows into what each budget, limit or breaker refused (and each shadow
    limit would have), by name."""
    found: dict[str, list[int]] = {}
    for row in rows:
        if row.blocked_by is not None:
            counts = found.setdefault(row.blocked_by, [0] * 7)
            counts[0] += 1
            counts[1] += row.would_cost_nanos
            counts[4] += row.status == RETRY_STATUS
        for name in row.shadow_blocks:
            counts = found.setdefault(name, [0] * 7)
            counts[2] += 1
            counts[3] += row.cost_nanos
        for name in row.settled_above:
            counts = found.setdefault(name, [0] * 7)
            counts[5] += 1
            counts[6] += row.cost_nanos
    return [BlockGroup(name, *counts) for name, counts in sorted(found.items())]
