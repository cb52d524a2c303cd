"""What routing changed in *spend* where budgets bind: the counterfactual capped at each
dollar budget's limit, and which budget members bound. Pure.

Routing makes requests cheaper; a member whose budget binds spends up to its limit in
both worlds and gets more requests, not a smaller bill. So besides the price effect
(`spendgate.domain.savings.SavingsGroup.price_saved_nanos`) a report states the spend
effect, per request row (`capped_rows`):

* **Enforced routing** (rows carry ``baseline_cost_nanos``): the unrouted world is the
  rows' counterfactual costs, taken in arrival order and capped, for every hard dollar
  budget that applies (config order), at the budget's limit for the member and window the
  row counts in: once a member-window's counterfactual reaches the limit, the later rows
  of it would not have been served unrouted (the first to cross it counts up to the limit
  only). Spend saved = capped counterfactual - actual cost.
* **Shadow rules** (rows carry ``shadow_cost_nanos``): the actual spend is the unrouted
  world; the routed one is predicted. A row in a member-window its budget *refused*
  requests in (the budget bound) predicts no saving: demand exceeded the limit at the
  asked prices, and cheaper requests would have bought more of them up to the same limit.
  Any other row predicts cost - shadow cost.

Budgets in tokens, requests or concurrency, soft and shadow budgets, and budgets with a
rolling period cap nothing here; nor do per-request caps. A member-window is clipped to
the report's period: spend before it does not count against the limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from spendgate.domain.budgets import Budget, BudgetScope, Kind, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, window

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


@dataclass(frozen=True, slots=True)
class CappedRow:
    """One served row's spend figures."""

    row: LedgerRow
    capped_counterfactual_nanos: int  # unrouted, capped at the budgets' limits
    shadow_spend_saved_nanos: int  # predicted by shadow rules, 0 where a budget bound
    bound: frozenset[MemberWindow]  # member-windows of this row whose budget refused
    capped: frozenset[MemberWindow]  # member-windows of this row whose cap clipped it


@dataclass(slots=True)
class _Walk:
    spent: dict[MemberWindow, int] = field(default_factory=dict)
    clipped: set[MemberWindow] = field(default_factory=set)


def capped_rows(
    rows: Iterable[LedgerRow],
    budgets: Sequence[Budget],
    calendar: Calendar,
    limits: Mapping[str, int] | None = None,
) -> list[CappedRow]:
    """Spend figures for every served row (refused rows only mark their member-window
    as bound). ``limits``: run-time limit overrides by budget name (else configured).
    Rows are taken in arrival order (ties by request id)."""
    capping = caps(budgets)
    limits = limits or {}
    ordered = sorted(rows, key=lambda r: (r.ts, r.request_id))
    refused: set[MemberWindow] = set()
    served: list[tuple[LedgerRow, list[MemberWindow]]] = []
    for row in ordered:
        windows = [
            (budget.name, member, window(budget.period, row.ts, calendar).bucket_ms)
            for budget in capping
            for member in members_of(budget, row)
        ]
        if row.blocked_by is not None:
            refused.update(w for w in windows if w[0] == row.blocked_by)
        else:
            served.append((row, windows))
    walk = _Walk()
    out: list[CappedRow] = []
    for row, windows in served:
        capped = _counterfactual(row)
        clipped: set[MemberWindow] = set()
        for key in windows:
            limit = limits.get(key[0], _limit_of(capping, key[0]))
            room = max(0, limit - walk.spent.get(key, 0))
            if capped > room:
                capped = room
                clipped.add(key)
        for key in windows:
            walk.spent[key] = walk.spent.get(key, 0) + capped
        walk.clipped.update(clipped)
        bound = frozenset(w for w in windows if w in refused)
        shadow_saved = 0 if bound else row.cost_nanos - _shadow_cost(row)
        out.append(CappedRow(row, capped, shadow_saved, bound, frozenset(clipped)))
    return out


def _limit_of(budgets: Sequence[Budget], name: str) -> int:
    return next(b.limit for b in budgets if b.name == name)


def _counterfactual(row: LedgerRow) -> int:
    base = row.baseline_cost_nanos
    return row.cost_nanos if base is None or row.unreconciled else base


def _shadow_cost(row: LedgerRow) -> int:
    priced = row.shadow_cost_nanos
    return row.cost_nanos if priced is None or row.unreconciled else priced
