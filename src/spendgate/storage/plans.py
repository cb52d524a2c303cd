"""Checks and conversions every counter store applies to a reservation the same way."""

from __future__ import annotations

from collections.abc import Sequence

from spendgate.errors import StorageError
from spendgate.storage.base import ReservationPlan, StoredCounter


def check_plan(plan: ReservationPlan) -> None:
    counters = plan.counters
    if len({(ref.budget.name, ref.member, ref.window.bucket) for ref in counters}) < len(counters):
        ids = [ref.id for ref in counters]
        raise ValueError(f"reservation {plan.reservation_id!r} names a counter twice: {ids}")
    if plan.expires_at.tzinfo is None:
        raise ValueError("ReservationPlan.expires_at must be timezone-aware")


def stored_counters(plan: ReservationPlan, amounts: Sequence[int]) -> tuple[StoredCounter, ...]:
    """What an admitted reservation holds, counter by counter, as stores keep it."""
    # ``_value_``: `Enum.value` is a Python-level descriptor, six calls a request
    return tuple(
        (ref.budget.name, ref.member, ref.window.bucket_ms, ref.budget.unit._value_, amount)
        for ref, amount in zip(plan.counters, amounts, strict=True)
    )


def check_amounts(
    reservation_id: str, held: Sequence[StoredCounter], amounts: Sequence[int]
) -> None:
    if len(held) != len(amounts):
        raise StorageError(
            f"reservation {reservation_id!r} holds {len(held)} counters, "
            f"settled with {len(amounts)} amounts"
        )
