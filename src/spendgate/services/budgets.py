"""Budget visibility and run-time control, behind both ``spendgate budgets`` and the admin API."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendgate.clock import LATEST, Clock, storable
from spendgate.domain.admission import CounterState
from spendgate.domain.budget_state import Refusals, budget_state, minimal_request
from spendgate.domain.budgets import (
    MAX_LIMIT,
    Budget,
    BudgetBook,
    BudgetScope,
    Caller,
    CounterRef,
    Kind,
    Unit,
    limit_bound,
)
from spendgate.domain.key_limits import KEY_BUDGET_PREFIX, KeyLimits, key_budgets
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.marks import row_members
from spendgate.domain.periods import window
from spendgate.domain.pricing import Price
from spendgate.errors import BUDGET_EXHAUSTED, InvalidRequest, NotFound
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
    minimal: int = 1  # its minimal request (`spendgate.domain.budget_state.minimal_request`)
    unanswered: bool = False  # its latest refusal as over budget came after all it admitted

    @property
    def condition(self) -> str:
        """``exhausted``, ``refusing``, ``held``, ``soft`` or ``ok``: see
        `spendgate.domain.budget_state.budget_state`. Refusals from before its limit was
        last set, or before a reset emptied it, do not count."""
        return budget_state(
            self.state, self.minimal, Refusals(self.unanswered, self.refused_lately)
        )

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
            "minimal_request": self.minimal,
            "display": {
                "limit": unit.render(self.state.limit),
                "spent": unit.render(self.state.spent),
                "reserved": unit.render(self.state.reserved),
                "remaining": unit.render(max(0, self.state.room)),
                "minimal_request": unit.render(self.minimal),
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
    def __init__(
        self,
        storage: Storage,
        book: BudgetBook,
        clock: Clock,
        *,
        models: Sequence[tuple[str, Price | None]] = (),
        min_output: int = 1,
    ) -> None:
        """``models``: the gateway's models and their prices, and ``min_output``
        (budget_settings.min_output_tokens): what a budget's minimal request is priced at."""
        self._storage = storage
        self._book = book
        self._clock = clock
        self._models = tuple(models)
        self._min_output = min_output

    async def _budget(self, name: str) -> Budget:
        budget = self._book.get(name) or await self._key_budget(name)
        if budget is None:
            known = ", ".join(self._book.names()) or "none"
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
        """Every budget's views, or (``name``) one budget's; an empty name names none."""
        now = self._clock.now()
        if name == "":
            raise InvalidRequest("name must name a budget, not be empty", param="name")
        if name is not None:
            budgets = [await self._budget(name)]
        else:
            budgets = [*self._book.budgets, *await self._keys_own()]
        refs: list[CounterRef] = []
        for budget in budgets:
            span = self._book.window(budget.period, now)
            if budget.target.match == "*":
                members = await self._storage.active_members(budget.name, span.since_ms)
            else:
                members = [budget.target.match]
            refs.extend(CounterRef(budget, member, span) for member in members)
        return await self._views(refs, now)

    async def for_caller(self, caller: Caller) -> list[BudgetView]:
        """Every budget and rate limit that counts ``caller``'s requests (those restricted
        to some models included; a per-session or per-model one is not: it depends on the
        request), and the budgets its key carries itself, for the caller's members."""
        now = self._clock.now()
        refs: list[CounterRef] = []
        for budget, members in self._book.counting(caller):
            span = self._book.window(budget.period, now)
            refs.extend(CounterRef(budget, m, span) for m in members)
        with contextlib.suppress(ValueError):  # checked when stored: a hand-edited row
            for budget in key_budgets(caller.key.id, KeyLimits.of(caller.key)):
                span = self._book.window(budget.period, now)
                refs.append(CounterRef(budget, caller.key.id, span))
        return await self._views(refs, now)

    async def _views(self, refs: list[CounterRef], now: datetime) -> list[BudgetView]:
        overrides = {o.budget: o for o in await self._storage.overrides(now)}
        states = await self._storage.counter_states(tuple(refs), now)
        lately = now - REFUSING
        since = min((ref.window.since for ref in refs), default=now)
        scopes = {s.ref.budget.name: s.ref.budget.target.scope for s in states}
        # each refusal filed once under every (budget, member) it counts for: one pass
        # over the rows, not one per view (10,000 listed budgets would make it quadratic)
        by_member: dict[tuple[str, str | None], list[LedgerRow]] = {}
        for row in await self._storage.view_marks(min(since, lately), lately, now):
            scope = scopes.get(row.blocked_by or "")
            if row.blocked_by and scope is not None:
                for member in set(row_members(scope, row)):
                    by_member.setdefault((row.blocked_by, member), []).append(row)
        # the overruns counted per (name, scope, member), once per distinct window start
        starts = {s.ref.window.since for s in states}
        overruns = {start: await self._storage.overruns(start, now) for start in starts}
        views = []
        for s in states:
            budget, member = s.ref.budget, s.ref.member
            rows = by_member.get((budget.name, member), [])
            override = overrides.get(budget.name)
            changed = max(lately, override.created_at) if override else lately
            refused = sum(row.blocked_by == budget.name and row.ts >= changed for row in rows)
            counted = overruns[s.ref.window.since]
            over = counted.get((budget.name, budget.target.scope.value, member), 0)
            minimal = minimal_request(budget, member, self._models, self._min_output)
            view = BudgetView(budget, member, s, override, refused, over, minimal)
            views.append(view)
        return await self._answered(views, by_member, overrides, now)

    async def _answered(
        self,
        views: list[BudgetView],
        by_member: dict[tuple[str, str | None], list[LedgerRow]],
        overrides: dict[str, BudgetOverride],
        now: datetime,
    ) -> list[BudgetView]:
        """Mark each view whose latest refusal as over budget, this window and since its
        limit was last set, came after everything it admitted (`BudgetView.unanswered`)."""
        last: dict[int, LedgerRow] = {}
        for index, view in enumerate(views):
            budget = view.budget
            if budget.kind is not Kind.BUDGET or not budget.blocks:
                continue
            override = overrides.get(budget.name)
            since = view.state.ref.window.since
            if override is not None:
                since = max(since, override.created_at)
            for row in by_member.get((budget.name, view.member), ()):  # oldest first
                if (
                    row.blocked_by == budget.name
                    and row.ts >= since
                    and (row.error or "").startswith(BUDGET_EXHAUSTED)
                ):
                    last[index] = row
        if not last:
            return views
        # the views still to answer, by (scope, member): one pass over the admitted rows
        waiting: dict[tuple[BudgetScope, str | None], list[int]] = {}
        for index in last:
            target = views[index].budget.target
            waiting.setdefault((target.scope, views[index].member), []).append(index)
        scopes = {scope for scope, _ in waiting}
        answered: set[int] = set()
        earliest = min(row.ts for row in last.values())
        for row in await self._storage.ledger(earliest, now):
            if row.blocked_by:
                continue
            model = row.routed_model or row.requested_model
            for scope in scopes:
                for member in set(row_members(scope, row)):
                    for index in waiting.get((scope, member), ()):
                        if (
                            index not in answered
                            and row.ts > last[index].ts
                            and views[index].budget.target.covers_model(model)
                        ):
                            answered.add(index)
        return [
            dataclasses.replace(view, unanswered=True)
            if index in last and index not in answered
            else view
            for index, view in enumerate(views)
        ]

    async def set_limit(self, name: str, limit: str, expires_at: datetime | None) -> BudgetOverride:
        budget = await self._budget(name)
        amount = parse_limit(budget.unit, limit, self._storage.max_limit)
        if expires_at is not None and expires_at.tzinfo is None:
            raise InvalidRequest("expires_at must carry a time zone", param="expires_at")
        now = self._clock.now()
        if expires_at is not None and expires_at <= now:
            raise InvalidRequest(
                f"expires_at {expires_at.isoformat()} is not in the future (now: "
                f"{now.isoformat()}); an override that has expired would never apply",
                param="expires_at",
            )
        if expires_at is not None and not storable(expires_at):
            raise InvalidRequest(
                f"expires_at {expires_at.isoformat()} is after {LATEST.isoformat()}, the "
                "latest time spendgate stores; give null for an override until cleared",
                param="expires_at",
            )
        override = BudgetOverride(name, amount, expires_at, now)
        await self._storage.set_override(override)
        return override

    async def clear_override(self, name: str) -> int:
        await self._budget(name)
        return await self._storage.clear_overrides(name)

    async def reset(self, name: str, member: str | None) -> int:
        budget = await self._budget(name)
        span = window(budget.period, self._clock.now(), self._book.calendar)
        return await self._storage.reset_budget(name, member, span.since_ms)


def parse_limit(unit: Unit, text: str, ceiling: int = MAX_LIMIT) -> int:
    """``text`` as a limit in ``unit``; at most ``ceiling``, the largest the counters keep."""
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
    if value > ceiling:
        raise InvalidRequest(
            f"limit must be at most {limit_bound(unit, ceiling)}{_kept_by(ceiling)}",
            param="limit",
        )
    return value


def _kept_by(ceiling: int) -> str:
    """Why a limit's bound is lower than the databases': the counters are on Redis."""
    if ceiling >= MAX_LIMIT:
        return ""
    return " (counters on Redis keep amounts below 2^53 exactly: docs/storage.md)"
