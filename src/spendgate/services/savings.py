"""Savings reports: one query path behind both ``spendgate savings`` and
``GET /admin/savings``.

The backend sums the period's ledger rows per group (`Storage.savings`: one indexed range
scan in SQL, no rows loaded into Python) and `spendgate.domain.savings.from_totals` ranks
them; `spendgate.domain.savings.savings` is the same arithmetic over rows, the reference
the storage tests hold the SQL to. Where dollar budgets cap spend (`spendgate.domain.capped`)
the period's rows are read once more to cap the counterfactual member by member, window by
window: measured on 20,400 rows (a quarter refused) with a per-user daily budget, 4.8 s
against 0.4 s without budgets, on 2 cores shared at a load of ~8; loading the rows is
most of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spendgate.clock import Clock
from spendgate.domain.budgets import BudgetBook
from spendgate.domain.capped import capped_rows, caps
from spendgate.domain.refusals import RECENT_OUTPUTS, SAMPLE_SPAN, callers_and_models
from spendgate.domain.savings import (
    Savings,
    SavingsBy,
    from_totals,
    group_json,
    shadow_json,
    with_caps,
)
from spendgate.services.reports import parse_choice, period_bounds
from spendgate.storage import Storage

SAVINGS_BY_CHOICES = tuple(b.value for b in SavingsBy)


@dataclass(frozen=True, slots=True)
class SavingsReport:
    group_by: SavingsBy
    period: str
    since: datetime
    until: datetime
    savings: Savings

    def to_json(self) -> dict[str, object]:
        total = group_json(self.savings.total)
        del total["group"]
        return {
            "group_by": self.group_by.value,
            "period": self.period,
            "since": self.since.isoformat(),
            "until": self.until.isoformat(),
            "total": total,
            "data": [group_json(g) for g in self.savings.groups],
            "shadow": [shadow_json(s) for s in self.savings.shadow],
        }


async def savings_report(
    storage: Storage,
    clock: Clock,
    *,
    group_by: str,
    period: str,
    book: BudgetBook | None = None,
) -> SavingsReport:
    """Actual against counterfactual cost per team or service over a period; with the
    budgets of ``book``, the spend figures capped at their limits (run-time overrides in
    force now included)."""
    grouping = parse_choice(SavingsBy, group_by)
    since, until = period_bounds(clock, period)
    groups, shadow = await storage.savings(since, until, grouping)
    folded = from_totals(groups, shadow)
    capping = caps(book.budgets) if book is not None else ()
    if book is not None and capping:
        limits = {o.budget: o.limit for o in await storage.overrides(clock.now())}
        rows = await storage.ledger(since, until)
        samples = await storage.recent_outputs(
            callers_and_models(rows), until - SAMPLE_SPAN, until, RECENT_OUTPUTS
        )
        capped = capped_rows(rows, capping, book.calendar, limits, samples)
        folded = with_caps(folded, capped, grouping)
    return SavingsReport(
        group_by=grouping,
        period=period,
        since=since,
        until=until,
        savings=folded,
    )
