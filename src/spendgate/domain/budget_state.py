"""What state a budget is in, as ``spendgate budgets``, the admin API and the response
headers all say it (docs/budgets.md, "Budget states"). Pure.

A budget (not a rate limit) is **exhausted** once what its spent amount leaves cannot
afford its *minimal request*: the cheapest request it would still admit at its clamping
floor, one input token and ``min_output_tokens`` of output (`minimal_request`). Requests in
flight do not change that: they give back at most what they reserved, never what was spent.
It is exhausted too while the last word it had on its traffic was a refusal as over budget
(``insufficient_quota`` / ``billing_error``) with nothing admitted after it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spendgate.domain.admission import CounterState
from spendgate.domain.budgets import Budget, BudgetScope, Kind, Unit
from spendgate.domain.models import ModelTable
from spendgate.domain.pricing import Price
from spendgate.money import token_cost

STATES: tuple[str, ...] = ("ok", "soft", "held", "refusing", "exhausted")


def minimal_request(
    budget: Budget, member: str, models: Iterable[tuple[str, Price | None]], min_output: int
) -> int:
    """The least a request can reserve on this budget member without asking for an output
    ceiling of its own below ``min_output`` (budget_settings.min_output_tokens, the floor
    clamping stops at): one input token plus ``min_output`` output tokens; in dollars at
    the standard rates of the cheapest of ``models`` (gateway model name, price) the budget
    covers, output at the dearer of output and reasoning, as a worst case prices it. At
    least 1 (a budget with nothing left affords nothing); 1 for a rate limit's units."""
    if budget.unit is Unit.TOKENS:
        return 1 + min_output
    if budget.unit is not Unit.NANOS:
        return 1
    costs = [
        _cost(price, min_output)
        for name, price in models
        if budget.target.covers_model(name)
        and (budget.target.scope is not BudgetScope.MODEL or member == name)
    ]
    return max(1, min(costs, default=1))


def model_prices(table: ModelTable) -> list[tuple[str, Price | None]]:
    """Every model of a table and its price (None: unpriced), for `minimal_request`."""
    return [(name, route.price) for name in table.names() if (route := table.get(name))]


def _cost(price: Price | None, min_output: int) -> int:
    if price is None or price.free:
        return 0
    rates = price.rates_for(1).full()
    return token_cost(1, rates.input) + token_cost(min_output, max(rates.output, rates.reasoning))


@dataclass(frozen=True, slots=True)
class Refusals:
    """What the ledger says of one budget member since its window began (or its limit was
    last set): ``unanswered``: its latest refusal as over budget came after everything it
    admitted; ``lately``: requests it refused in the last minute, for any reason."""

    unanswered: bool = False
    lately: int = 0


def budget_state(state: CounterState, minimal: int, refusals: Refusals = Refusals()) -> str:
    """``exhausted``, ``refusing``, ``held``, ``soft`` or ``ok`` (see the module docstring
    and docs/budgets.md); the first that holds, in that order.

    A reset (spent back to 0) answers every earlier refusal: refusals count only while the
    budget holds something (spent or reserved) or its limit is 0."""
    budget = state.ref.budget
    is_budget = budget.kind is Kind.BUDGET
    if is_budget and state.limit - state.spent < max(1, minimal):
        return "exhausted"
    holds = state.spent + state.reserved > 0 or state.limit == 0
    if is_budget and budget.blocks and refusals.unanswered and holds:
        return "exhausted"
    held = False
    if state.room <= 0:
        gives_back = budget.clamps and budget.blocks and state.reserved > 0
        if not (gives_back and state.spent < state.limit):
            return "exhausted"
        held = True
    if refusals.lately and holds:
        return "refusing"
    if held:
        return "held"
    if any(state.used_bp >= bp for bp in budget.soft_bp):
        return "soft"
    return "ok"
