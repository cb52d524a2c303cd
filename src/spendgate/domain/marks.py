"""The marked ledger rows a budgets view reads (`spendgate.services.budgets`), narrowed
from every refused or overrun row of the longest budget window to what the view's figures
depend on. Pure.

The view counts refusals only from a recent moment on (`REFUSING` before now, or a later
override), overruns over each budget's window, and for its "unanswered" mark it needs only
the newest refusal for an exhausted budget of each member. A member is a function of the
row's name and caller (`Caller`): its key, user, service, team, org, session, routed model
and tags. So these rows give the view the same figures as all of them:

* every marked row from ``recent`` on;
* every row with an overrun;
* per name and caller, the newest refusal for an exhausted budget.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

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
    return [
        row
        for index, row in enumerate(rows)
        if index in kept or row.ts >= recent or row.settled_above
    ]
