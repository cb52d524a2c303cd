"""What a reservation turns into when it settles, or when its lease lapses. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from spendgate.domain.admission import WorstCase
from spendgate.domain.budgets import CounterRef, Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.usage import Usage


def actual_amount(unit: Unit, usage: Usage, cost: int) -> int:
    """What a counter is charged: the cost for dollars, all tokens for tokens, one request
    per request sent, and nothing for concurrency (the slot is simply given back)."""
    if unit is Unit.NANOS:
        return cost
    if unit is Unit.TOKENS:
        return usage.input_tokens + usage.output_tokens
    return 1 if unit is Unit.REQUESTS else 0


def actual_amounts(counters: Sequence[CounterRef], usage: Usage, cost: int) -> tuple[int, ...]:
    return tuple(actual_amount(ref.budget.unit, usage, cost) for ref in counters)


def row_amounts(units: Sequence[str], row: LedgerRow) -> tuple[int, ...]:
    """What each counter (by its unit's value) is charged for the request a ledger row
    records: the rule that keeps counters and ledger in agreement whichever settles first.
    For a lapsed row (charged its worst case) this is what the reservation held, except
    that a concurrency slot is freed."""
    usage = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    return tuple(actual_amount(Unit(unit), usage, row.cost_nanos) for unit in units)


def lapsed_row(template: LedgerRow, worst: WorstCase, ceiling: int) -> LedgerRow:
    """The row for a request whose gateway died before settling it: charged its worst case
    (input upper bound plus the whole admitted output ceiling), flagged ``unreconciled``."""
    return dataclasses.replace(
        template,
        input_tokens=worst.input_tokens,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=ceiling * worst.choices,
        reasoning_tokens=0,
        cost_nanos=worst.amount(Unit.NANOS, ceiling),
        usage_estimated=True,
        unreconciled=True,
        output_ceiling=ceiling,
        error="gateway stopped before the request settled; charged at its reservation",
    )
