"""Budgets: which limits apply to a request, and the counters they are kept in. Pure.

A budget is declared once (config) and applies per *member* of its scope: ``scope: team,
match: ml`` is one budget for team ml; ``scope: user, match: "*"`` gives every user a
budget of their own. ``models`` narrows a budget to requested models matching any of the
glob patterns. A counter is one (budget, member, time bucket); see `spendgate.domain.periods`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from fnmatch import fnmatchcase

from spendgate.config.schema import BudgetConfig, BudgetScope, Config, RequestCapConfig
from spendgate.domain.identity import ApiKey
from spendgate.domain.periods import Calendar, Period, Window, window
from spendgate.money import dollars_to_nanos, format_dollars

BASIS_POINTS = 10_000


class Unit(Enum):
    NANOS = "usd"
    TOKENS = "tokens"

    def render(self, amount: int) -> str:
        if self is Unit.NANOS:
            return format_dollars(amount, places=6)
        return f"{amount:,} tokens"


@dataclass(frozen=True, slots=True)
class Scoped:
    """A scope, a member pattern and model patterns: what budgets and caps apply to."""

    scope: BudgetScope
    match: str
    models: tuple[str, ...]

    def members(self, key: ApiKey, org: str | None) -> list[str]:
        values = _scope_values(self.scope, key, org)
        if self.match == "*":
            return values
        return [value for value in values if value == self.match]

    def covers_model(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, pattern) for pattern in self.models)


def _scope_values(scope: BudgetScope, key: ApiKey, org: str | None) -> list[str]:
    if scope is BudgetScope.TAG:
        return list(dict.fromkeys(key.tags))  # a tag named twice is still one counter
    value = {
        BudgetScope.ORG: org,
        BudgetScope.TEAM: key.team,
        BudgetScope.SERVICE: key.service,
        BudgetScope.USER: key.user,
        BudgetScope.KEY: key.id,
    }[scope]
    return [value] if value else []


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    target: Scoped
    unit: Unit
    limit: int  # nano-dollars or tokens, as configured (runtime overrides live in storage)
    period: Period
    hard: bool
    soft_bp: tuple[int, ...]  # soft thresholds in basis points of the limit, ascending

    @classmethod
    def from_config(cls, spec: BudgetConfig) -> Budget:
        unit = Unit.NANOS if spec.limit_usd is not None else Unit.TOKENS
        limit = (
            dollars_to_nanos(spec.limit_usd) if spec.limit_usd is not None else spec.limit_tokens
        )
        assert limit is not None
        return cls(
            name=spec.name,
            target=Scoped(spec.scope, spec.match, tuple(spec.models)),
            unit=unit,
            limit=limit,
            period=Period.parse(spec.period),
            hard=spec.hard,
            soft_bp=tuple(sorted(int(t * BASIS_POINTS) for t in spec.soft_thresholds)),
        )

    def describe(self, member: str) -> str:
        scope = self.target.scope.value
        models = f" on {', '.join(self.target.models)}" if self.target.models else ""
        return f"{scope} '{member}'{models} ({self.name}, {self.period})"


@dataclass(frozen=True, slots=True)
class CounterRef:
    """One budget's counter for one member in the current window."""

    budget: Budget
    member: str
    window: Window

    @property
    def id(self) -> str:
        return f"{self.budget.name}|{self.member}|{self.window.bucket_ms}"


@dataclass(frozen=True, slots=True)
class RequestCap:
    target: Scoped
    max_input_tokens: int | None
    max_request_nanos: int | None

    @classmethod
    def from_config(cls, spec: RequestCapConfig) -> RequestCap:
        return cls(
            target=Scoped(spec.scope, spec.match, tuple(spec.models)),
            max_input_tokens=spec.max_input_tokens,
            max_request_nanos=(
                dollars_to_nanos(spec.max_request_usd) if spec.max_request_usd is not None else None
            ),
        )


class BudgetBook:
    """Every declared budget and request cap, and the calendar they are counted in."""

    def __init__(
        self, budgets: Sequence[Budget], caps: Sequence[RequestCap], calendar: Calendar
    ) -> None:
        self.budgets = tuple(budgets)
        self.caps = tuple(caps)
        self.calendar = calendar
        self._by_name = {budget.name: budget for budget in budgets}

    @classmethod
    def from_config(cls, config: Config) -> BudgetBook:
        settings = config.budget_settings
        return cls(
            [Budget.from_config(spec) for spec in config.budgets],
            [RequestCap.from_config(spec) for spec in config.request_caps],
            Calendar.of(settings.timezone, settings.week_start.value, settings.month_start_day),
        )

    def __bool__(self) -> bool:
        return bool(self.budgets or self.caps)

    def get(self, name: str) -> Budget | None:
        return self._by_name.get(name)

    def counters(self, key: ApiKey, org: str | None, model: str, now: datetime) -> list[CounterRef]:
        refs: list[CounterRef] = []
        for budget in self.budgets:
            if not budget.target.covers_model(model):
                continue
            members = budget.target.members(key, org)
            if members:
                span = window(budget.period, now, self.calendar)
                refs.extend(CounterRef(budget, member, span) for member in members)
        return refs

    def caps_for(self, key: ApiKey, org: str | None, model: str) -> list[RequestCap]:
        return [
            cap
            for cap in self.caps
            if cap.target.covers_model(model) and cap.target.members(key, org)
        ]
