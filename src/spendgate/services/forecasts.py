"""Forecasts of the budgets a view shows (`spendgate.domain.forecast`), with the recent
spend each member's burn rate is measured on, read from the ledger: the requests of the
last ``window`` that the budget counts (its scope's member, its models), charged as the
counters are charged (`spendgate.domain.settlement.row_amounts`), and never more than the
budget's counter holds (its spend and its burn rate come from the same window)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from spendgate.domain.budgets import Kind, Unit
from spendgate.domain.forecast import Forecast, forecast
from spendgate.domain.marks import row_members
from spendgate.domain.settlement import row_amounts
from spendgate.services.budgets import BudgetView
from spendgate.storage import Storage

DEFAULT_WINDOW = timedelta(hours=1)
_FORECAST_UNITS = (Unit.NANOS, Unit.TOKENS)


def forecastable(view: BudgetView) -> bool:
    budget = view.budget
    return budget.kind is Kind.BUDGET and budget.unit in _FORECAST_UNITS


async def forecasts(
    storage: Storage,
    views: Sequence[BudgetView],
    now: datetime,
    window: timedelta = DEFAULT_WINDOW,
) -> list[Forecast | None]:
    """One forecast per view (None for a rate limit or a requests budget)."""
    wanted = [view for view in views if forecastable(view)]
    if not wanted:
        return [None] * len(views)
    rows = [row for row in await storage.ledger(now - window, now) if not row.blocked_by]
    out: list[Forecast | None] = []
    for view in views:
        if not forecastable(view):
            out.append(None)
            continue
        budget, ref = view.budget, view.state.ref
        since = ref.window.since
        start = max(since, now - window)
        recent = 0
        for row in rows:
            if row.ts < start or view.member not in row_members(budget.target.scope, row):
                continue
            if not budget.target.covers_model(row.routed_model or row.requested_model):
                continue
            recent += row_amounts([budget.unit.value], row)[0]
        # What the window spent is part of what the budget's counter holds: rows beyond it
        # were charged before the counter counted them (a budget added mid-period, a
        # `budgets reset`), and a burn rate from them would not be the budget's.
        recent = min(recent, view.state.spent)
        rolling = budget.period.kind in ("rolling", "lifetime")
        out.append(
            forecast(
                spent=view.state.spent,
                limit=view.state.limit,
                recent=recent,
                window=window,
                now=now,
                since=since,
                resets_at=None if rolling else ref.window.resets_at,
            )
        )
    return out


def burn_window(burn_window_s: int) -> timedelta:
    return timedelta(seconds=burn_window_s)


def forecast_json(view: BudgetView, found: Forecast | None) -> dict[str, object] | None:
    """A forecast as the budgets API, ``spendgate budgets --json`` and /v1/spendgate/me show
    it: amounts in the budget's unit, and rendered (``display``)."""
    if found is None:
        return None
    unit = view.budget.unit
    return {
        **found.to_json(),
        "display": {
            "burn_per_hour": unit.render(found.burn_per_hour),
            "projected": unit.render(found.projected) if found.projected is not None else None,
        },
    }


async def views_json(
    storage: Storage, views: Sequence[BudgetView], now: datetime, window: timedelta
) -> list[dict[str, object]]:
    """Each view's JSON with its ``forecast``."""
    found = await forecasts(storage, views, now, window)
    return [
        {**view.to_json(), "forecast": forecast_json(view, f)}
        for view, f in zip(views, found, strict=True)
    ]
