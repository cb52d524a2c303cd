"""Budget visibility and run-time control, behind both ``spendgate budgets`` and the admin API."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendgate.clock import Clock
from spendgate.domain.admission import CounterState
from spendgate.domain.budgets import Budget, BudgetBook, BudgetScope, CounterRef, Unit
from spendgate.domain.key_limits import KEY_BUDGET_PREFIX, KeyLimits, key_budgets
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import window
from spendgate.errors import InvalidRequest, NotFound
from spendgate.money import dollars_to_nanos
from spendgate.storage import BudgetOverride, Storage

REFUSING = timedelta(seconds=60)  # a budget that refused someone this recently: "refusing"


@dataclass(frozen=True, slots=True)
class BudgetView:
    budget: Budget
    member: str
    state: CounterState
    override: BudgetOverride | None
    refused_lately: int = 0  # requests it refused within REFUSING
    overruns: int = 0  # requests charged more on it than they reserved, this window

    @property
    def condition(self) -> str:
        """The counter's state (`CounterState.state`), or ``refusing`` where it refused a
        request lately though its spent amount leaves room (its room was too small for
        the request, or held by requests in flight past the line's bound). Refusals from
        before its limit was last set, or before a reset emptied it, do not count."""
        counted = self.state.state
        holds = self.state.spent + self.state.reserved > 0 or self.state.limit == 0
        if counted != "exhausted" and self.refused_lately and holds:
            return "refusing"
        return counted

    def to_json(self) -> dict[str, object]:
        unit = self.budget.unit
        ref = self.state.ref
        return {
            "name": self.budget.name,
            "scope": self.budget.target.scope.value,
            "member": self.member,
            "models": list(self.budget.target.models),
            "kind": self.budget.kind.value,
            "shadow": self.budget.shadow,
            "unit": unit.value,
            "period": str(self.budget.period),
            "hard": self.budget.hard,
            "limit": self.state.limit,
            "configured_limit": self.budget.limit,
            "spent": self.state.spent,
            "reserved": self.state.reserved,
            "remaining": max(0, self.state.room),
            "display": {
                "limit": unit.render(self.state.limit),
                "spent": unit.render(self.state.spent),
                "reserved": unit.render(self.state.reserved),
                "remaining": unit.render(max(0, self.state.room)),
            },
            "used_bp": self.state.used_bp,
            "state": self.condition,
            "refused_last_minute": self.refused_lately,
            "overruns": self.overruns,
            "soft_thresholds_bp": list(self.budget.soft_bp),
            "window_since": ref.window.since.isoformat(),
            "resets_at": ref.window.resets_at.isoformat() if ref.window.resets_at else None,
            "override": (
                {
                    "limit": self.override.limit,
                    "expires_at": (
                        self.override.expires_at.isoformat() if self.override.expires_at else None
                    ),
                }
                if self.override
                else None
            ),
        }


class BudgetService:
    def __init__(self, storage: Storage, book: BudgetBook, clock: Clock) -> None:
        self._storage = storage
        self._book = book
        self._clock = clock

    async def _budget(self, name: str) -> Budget:
        budget = self._book.get(name) or await self._key_budget(name)
        if budget is None:
            known = ", ".join(b.name for b in self._book.budgets) or "none"
            raise NotFound(
                f"no budget named {name!r} (budgets: {known}; a key's own: "
                f"{KEY_BUDGET_PREFIX}<key id>, see spendgate keys list)",
                param="name",
            )
        return budget

    async def _key_budget(self, name: str) -> Budget | None:
        """A budget a key carries itself: ``key:<id>`` or ``key:<id>:<rate>``."""
        if not name.startswith(KEY_BUDGET_PREFIX):
            return None
        key_id = name[len(KEY_BUDGET_PREFIX) :].split(":", 1)[0]
        key = await self._storage.key_by_id(key_id)
        if key is None:
            return None
        found = [b for b in key_budgets(key.id, KeyLimits.of(key)) if b.name == name]
        return found[0] if found else None

    async def _keys_own(self) -> list[Budget]:
        """The budgets of every key that carries some (revoked keys left out)."""
        found: list[Budget] = []
        for key in await self._storage.list_keys():
            with contextlib.suppress(ValueError):  # checked when stored: a hand-edited row
                found.extend(key_budgets(key.id, KeyLimits.of(key)) if key.metadata else ())
        return found

    async def overview(self, name: str | None = None) -> list[BudgetView]:
        now = self._clock.now()
        if name:
            budgets = [await self._budget(name)]
        else:
            budgets = [*self._book.budgets, *await self._keys_own()]
        overrides = {o.budget: o for o in await self._storage.overrides(now)}
        refs: list[CounterRef] = []
        for budget in budgets:
            span = window(budget.period, now, self._book.calendar)
            if budget.target.match == "*":
                members = await self._storage.active_members(budget.name, span.since_ms)
            else:
                members = [budget.target.match]
            refs.extend(CounterRef(budget, member, span) for member in members)
        states = await self._storage.counter_states(tuple(refs), now)
        lately = now - REFUSING
        since = min((ref.window.since for ref in refs), default=now)
        by_budget: dict[str, list[LedgerRow]] = {}
        for row in await self._storage.marked(min(since, lately), now):
            for name in {row.blocked_by, *row.settled_above} - {None}:
                by_budget.setdefault(str(name), []).append(row)
        views = []
        for s in states:
            budget, member = s.ref.budget, s.ref.member
            rows = [
                row
                for row in by_budget.get(budget.name, ())
                if member in row_members(budget.target.scope, row)
            ]
            override = overrides.get(budget.name)
            changed = max(lately, override.created_at) if override else lately
            refused = sum(row.blocked_by == budget.name and row.ts >= changed for row in rows)
            over = sum(
                budget.name in row.settled_above and row.ts >= s.ref.window.since for row in rows
            )
            views.append(BudgetView(budget, member, s, override, refused, over))
        return views

    async def set_limit(self, name: str, limit: str, expires_at: datetime | None) -> BudgetOverride:
        budget = await self._budget(name)
        amount = parse_limit(budget.unit, limit)
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidRequest("expires_at must carry a time zone", param="expires_at")
        override = BudgetOverride(name, amount, expires_at, self._clock.now())
        await self._storage.set_override(override)
        return override

    async def clear_override(self, name: str) -> int:
        await self._budget(name)
        return await self._storage.clear_overrides(name)

    async def reset(self, name: str, member: str | None) -> int:
        budget = await self._budget(name)
        span = window(budget.period, self._clock.now(), self._book.calendar)
        return await self._storage.reset_budget(name, member, span.since_ms)


def parse_limit(unit: Unit, text: str) -> int:
    value: int
    try:
        if unit is Unit.NANOS:
            value = dollars_to_nanos(text)
        else:  # tokens, requests, requests in flight: whole numbers
            value = int(text.replace(",", "").replace("_", ""))
    except ValueError:
        what = "a dollar amount like 250.00" if unit is Unit.NANOS else "a whole number"
        raise InvalidRequest(f"limit must be {what}, not {text!r}", param="limit") from None
    if value < 0:
        raise InvalidRequest("limit must not be negative", param="limit")
    return value


def row_members(scope: BudgetScope, row: LedgerRow) -> tuple[str | None, ...]:
    """The members of a scope that a ledger row was counted for (as
    `spendgate.domain.budgets.Scoped.members` matched its caller)."""
    if scope is BudgetScope.TAG:
        return row.tags
    return (
        {
            BudgetScope.ORG: row.org,
            BudgetScope.TEAM: row.team,
            BudgetScope.SERVICE: row.service,
            BudgetScope.USER: row.user,
            BudgetScope.KEY: row.key_id,
            BudgetScope.SESSION: row.session_id,
            BudgetScope.MODEL: row.routed_model,
        }[scope],
    )
