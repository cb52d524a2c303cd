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


def lapse_charge(unit: str, reserved: int) -> int:
    """A lapsed reservation is charged what it reserved, but frees its concurrency slot."""
    return 0 if unit == Unit.CONCURRENT.value else reserved


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
