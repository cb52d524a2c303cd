"""What the Redis scripts keep exact: Lua numbers are doubles, exact below 2^53. Limits,
overrides and amounts at or above it (nano-dollars: about $9M per counter) are refused with
a `StorageError` before any script runs."""

from __future__ import annotations

from spendgate.errors import StorageError
from spendgate.storage.base import ReservationPlan

EXACT = 2**53  # Lua's doubles hold every integer below this exactly
MAX_OUTPUT = EXACT // 10**6  # output tokens (ceiling x choices) the exact cost needs


def check_exact(plan: ReservationPlan) -> None:
    """Refuse a plan whose numbers could leave the exact range of the script."""
    worst = plan.worst
    if worst.requested_ceiling * worst.choices > MAX_OUTPUT:
        raise StorageError(
            f"reservation {plan.reservation_id!r} asks for {worst.requested_ceiling} x "
            f"{worst.choices} output tokens; the Redis counter store handles at most "
            f"{MAX_OUTPUT:,} per request"
        )
    if worst.choices * worst.output_rate * 10 >= EXACT:
        raise StorageError("an output price beyond the Redis counter store's exact range")
    for ref in plan.counters:
        if not 0 <= ref.budget.limit < EXACT:
            raise StorageError(
                f"budget {ref.budget.name!r}: limit {ref.budget.limit} is beyond what the "
                f"Redis counter store keeps exactly (below 2^53 = {EXACT:,} in its unit; "
                "$9,007,199 for a dollar budget)"
            )
    for unit in {ref.budget.unit for ref in plan.counters}:
        if worst.amount(unit, worst.requested_ceiling) >= EXACT:
            raise StorageError(
                f"reservation {plan.reservation_id!r}: its worst case in {unit.value} is "
                "beyond the Redis counter store's exact range (2^53)"
            )
