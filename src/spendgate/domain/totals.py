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
    errors: int
    estimated: int
