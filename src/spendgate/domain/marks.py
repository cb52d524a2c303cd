"""What a budgets view reads of the marked ledger rows (`spendgate.services.budgets`),
narrowed from every refused or overrun row of the longest budget window to what the view's
figures depend on. Pure.

The view counts refusals only from a recent moment on (`REFUSING` before now, or a later
override), overruns over each budget's window, and for its "unanswered" mark it needs only
the newest refusal for an exhausted budget of each member. A member is a function of the
row's name and caller (`Caller`): its key, user, service, team, org, session, routed model
and tags. So the view reads, instead of all the marked rows:

* `view_marks`: every marked row from ``recent`` on, and per name and caller the newest
  refusal for an exhausted budget of the span read (of refusals at one instant, the one
  written last: `Ledger.marked`'s order, ties by row id or insertion order);
* `overruns`: per name, scope and member, the count of rows settled above that name over
  each budget window (a storage may keep these in rollups: SQLite's migration 0018).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from spendgate.domain.budgets import BudgetScope
from spendgate.domain.ledger import LedgerRow
from spendgate.errors import BUDGET_EXHAUSTED

Caller = tuple[
    str,
    str,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    str | None,
    tuple[str, ...],
]


def caller_of(row: LedgerRow) -> Caller:
    """What refused a row and who it was refused for, as far as a view's members go."""
    return (
        row.blocked_by or "",
        row.key_id,
        row.user,
        row.service,
        row.team,
        row.org,
        row.session_id,
        row.routed_model,
        row.tags,
    )


def exhausted(row: LedgerRow) -> bool:
    """A refusal for a budget with nothing left (not a rate limit, a loop, a breaker)."""
    return row.blocked_by is not None and (row.error or "").startswith(BUDGET_EXHAUSTED)


def view_marks(marked: Iterable[LedgerRow], recent: datetime) -> list[LedgerRow]:
    """Of ``marked`` (oldest first, as `Ledger.marked` returns them), the rows a budgets
    view reads, oldest first."""
    rows = list(marked)
    newest: dict[Caller, int] = {}
    for index, row in enumerate(rows):
        if exhausted(row):
            newest[caller_of(row)] = index
    kept = set(newest.values())
    return [row for index, row in enumerate(rows) if index in kept or row.ts >= recent]


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


Overruns = dict[tuple[str, str, str], int]  # (name, scope's value, member): rows


def overruns(marked: Iterable[LedgerRow], since: datetime, until: datetime) -> Overruns:
    """Per budget name, scope and member, how many of ``marked``'s rows of ``[since,
    until)`` were settled above that name and counted for that member (each row once per
    name and member; a member that is None is left out: no view has one)."""
    found: Overruns = {}
    for row in marked:
        if not row.settled_above or not since <= row.ts < until:
            continue
        for name in set(row.settled_above):
            for scope in BudgetScope:
                for member in set(row_members(scope, row)):
                    if member is not None:
                        combo = (name, scope.value, member)
                        found[combo] = found.get(combo, 0) + 1
    return found
