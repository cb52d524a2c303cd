"""Usage totals per group over a period: the shape reports are computed from. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum


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
