"""What routing changed in *spend* where budgets bind: the counterfactual capped at each
dollar budget's limit, and which budget members bound. Pure.

Routing makes requests cheaper; a member whose budget binds spends up to its limit in
both worlds and gets more requests, not a smaller bill. So besides the price effect
(`spendgate.domain.savings.SavingsGroup.price_saved_nanos`) a report states the spend
effect, per served row (`capped_rows`), for every *member-window* (one member of a hard
dollar budget, in one of its calendar windows):

* A member-window **bound** when its budget refused requests in it (the member spent as
  much as admission let it). Its **cap** is what it actually spent: the limit, less a
  remainder no request could fill (at most one request's worst case) that is not a
  saving. Any other member-window's cap is the budget's limit (a run-time override in
  force counts).
* **Enforced routing** (rows carry ``baseline_cost_nanos``): the unrouted world is the
  rows' counterfactual costs, in arrival order, each cut to the room its member-windows
  (every hard dollar budget that applies, config order) have left under their caps; once
  a member-window's counterfactual reaches its cap, its later rows would not have been
  served unrouted. Spend saved = capped counterfactual - actual cost. A bound member
  saved nothing of spend; a member routing kept under its limit, who unrouted would have
  hit it, saved the limit less what it spent.
* **Shadow rules** (rows carry ``shadow_cost_nanos``): the actual spend is the unrouted
  world; the routed one is predicted. Rows of no bound member-window predict cost - shadow
  cost. A bound member-window predicts its actual spend less the routed world's spend,
  ``min(actual spend, shadow cost of its rows + its distinct refused requests' realistic
  estimate (`spendgate.domain.refusals`) at the same routed/asked price ratio)``: the
  requests it was refused, made cheaper, could have been served within the same spend.
  A row belongs to the first bound member-window of its budgets (config order); the
  member-window's prediction is counted on its last row.

Budgets in tokens, requests or concurrency, soft and shadow budgets, and budgets with a
rolling period cap nothing here; nor do per-request caps. A member-window is clipped to
the report's period: spend before it does not count against the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from spendgate.domain.budgets import Budget, BudgetScope, Kind, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, bucket_end, window
from spendgate.domain.refusals import CallerModel, estimate, repeats

MemberWindow = tuple[str, str, int]  # (budget, member, window bucket in ms)


def caps(budgets: Iterable[Budget]) -> tuple[Budget, ...]:
    """The budgets that cap spend: hard, enforced, in dollars, on a calendar period."""
    return tuple(
        b
        for b in budgets
        if b.kind is Kind.BUDGET
        and b.unit is Unit.NANOS
        and b.blocks
        and b.period.kind != "rolling"
    )


def members_of(budget: Budget, row: LedgerRow) -> list[str]:
    """The members of ``budget`` a row counts for (none: it does not apply)."""
    target = budget.target
    if not target.covers_model(row.routed_model or row.requested_model):
        return []
    if target.scope is BudgetScope.TAG:
        values = list(dict.fromkeys(row.tags))
    else:
        value = {
            BudgetScope.ORG: row.org,
            BudgetScope.TEAM: row.team,
            BudgetScope.SERVICE: row.service,
            BudgetScope.USER: row.user,
            BudgetScope.KEY: row.key_id,
            BudgetScope.SESSION: row.session_id,
            BudgetScope.MODEL: row.routed_model or row.requested_model,
        }[target.scope]
        values = [value] if value else []
    return values if target.match == "*" else [v for v in values if v == target.match]


class _Buckets:
    """The window bucket a moment falls in, per budget, remembered while it lasts (rows come
    in time order: time-zone arithmetic on each of them was most of the fold's time)."""

    def __init__(self, calendar: Calendar) -> None:
        self._calendar = calendar
        self._last: dict[str, tuple[datetime, datetime, int]] = {}

    def of(self, budget: Budget, moment: datetime) -> int:
        found = self._last.get(budget.name)
        if found is not None and found[0] <= moment < found[1]:
            return found[2]
        span = window(budget.period, moment, self._calendar)
        self._last[budget.name] = (span.bucket, bucket_end(budget.period, span), span.bucket_ms)
        return span.bucket_ms


@dataclass(frozen=True, slots=True)
class CappedRow:
    """One served row's spend figures."""

    row: LedgerRow
    capped_counterfactual_nanos: int  # unrouted, capped at the budgets' caps
    shadow_spend_saved_nanos: int  # predicted by shadow rules (see the module doc)
    bound: frozenset[MemberWindow]  # member-windows of this row whose budget refused
    capped: frozenset[MemberWindow]  # ... not bound, whose limit clipped it (it would have
    # bound unrouted)


@dataclass(slots=True)
class _Bound:
    """A bound member-window, for the shadow prediction."""

    rows: list[int] = field(default_factory=list)  # indexes of its served rows
    cost: int = 0
    shadow_cost: int = 0
    refused_estimate: int = 0


def capped_rows(
    rows: Iterable[LedgerRow],
    budgets: Sequence[Budget],
    calendar: Calendar,
    limits: Mapping[str, int] | None = None,
    samples: Mapping[CallerModel, Sequence[int]] | None = None,
) -> list[CappedRow]:
    """Spend figures for every served row, in arrival order (ties by request id); refused
    rows mark their member-window bound. ``limits``: run-time limit overrides by budget
    name (else configured); ``samples``: output sizes for refused requests' estimates
    (`spendgate.domain.refusals.output_samples`)."""
    capping = caps(budgets)
    limits = limits or {}
    ordered = sorted(rows, key=lambda r: (r.ts, r.request_id))
    repeated = repeats(r for r in ordered if r.blocked_by is not None)
    refused: dict[MemberWindow, int] = {}  # bound member-window -> its refusals' estimate
    spent: dict[MemberWindow, int] = {}
    served: list[tuple[LedgerRow, list[MemberWindow]]] = []
    buckets = _Buckets(calendar)
    for row in ordered:
        windows = [
            (budget.name, member, buckets.of(budget, row.ts))
            for budget in capping
            for member in members_of(budget, row)
        ]
        if row.blocked_by is not None:
            for key in windows:
                if key[0] == row.blocked_by:
                    extra = 0 if row.request_id in repeated else estimate(row, samples or {})
                    refused[key] = refused.get(key, 0) + extra
        else:
            served.append((row, windows))
            for key in windows:
                spent[key] = spent.get(key, 0) + row.cost_nanos

    def cap(key: MemberWindow) -> int:
        if key in refused:
            return spent[key]
        return limits.get(key[0], next(b.limit for b in capping if b.name == key[0]))

    walked: dict[MemberWindow, int] = {}
    bound_groups: dict[MemberWindow, _Bound] = {}
    out: list[CappedRow] = []
    for index, (row, windows) in enumerate(served):
        capped = _counterfactual(row)
        clipped: set[MemberWindow] = set()
        for key in windows:
            room = max(0, cap(key) - walked.get(key, 0))
            if capped > room:
                capped = room
                clipped.add(key)
        for key in windows:
            walked[key] = walked.get(key, 0) + capped
        bound = [key for key in windows if key in refused]
        if bound:
            held = bound_groups.setdefault(bound[0], _Bound())
            held.rows.append(index)
            held.cost += row.cost_nanos
            held.shadow_cost += _shadow_cost(row)
        shadow_saved = 0 if bound else row.cost_nanos - _shadow_cost(row)
        clipped.difference_update(bound)  # a bound member-window is counted as bound
        out.append(CappedRow(row, capped, shadow_saved, frozenset(bound), frozenset(clipped)))
    for key, held in bound_groups.items():
        routed_refused = refused[key] * held.shadow_cost // held.cost if held.cost else refused[key]
        predicted = held.cost - min(held.cost, held.shadow_cost + routed_refused)
        last = held.rows[-1]
        out[last] = replace(out[last], shadow_spend_saved_nanos=predicted)
    return out


def _counterfactual(row: LedgerRow) -> int:
    base = row.baseline_cost_nanos
    return row.cost_nanos if base is None or row.unreconciled else base


def _shadow_cost(row: LedgerRow) -> int:
    priced = row.shadow_cost_nanos
    return row.cost_nanos if priced is None or row.unreconciled else priced
