"""The reserve script's call and answer (``reserve_v2.lua``): a plan packed into its few
arguments, and its answer read back into counter states and checked against
`spendgate.domain.admission.decide`.

The script's numbers travel as one JSON array (8 for the request, 5 a counter) instead of
one argument each: every argument costs the client an encoding step and the server a
conversion, and a request with three budgets and three limits had about 60 of them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import orjson

from spendgate.clock import from_ms
from spendgate.domain.admission import Admitted, CounterState, Refused, decide
from spendgate.domain.budgets import CounterRef, Unit
from spendgate.storage import codec
from spendgate.storage.base import ReservationPlan, StoredCounter

# flags of a counter: 1 blocks, 2 clamps, 4 * the unit's code
_UNIT_FLAGS = {Unit.NANOS: 0, Unit.TOKENS: 4, Unit.REQUESTS: 8, Unit.CONCURRENT: 8}
_MS = timedelta(milliseconds=1)


def rolling(ref: CounterRef) -> tuple[int, int]:
    """(length ms, bucket width ms) of a rolling window; (0, 0) for any other."""
    period = ref.budget.period
    window = ref.window
    if period.kind != "rolling" or period.length is None or window.resets_at is None:
        return 0, 0
    width = window.resets_at - window.since - period.length
    return period.length // _MS, width // _MS


def state(ref: CounterRef, values: Sequence[Any], server_windows: bool) -> CounterState:
    """A counter's state from the six integers a script answers for it."""
    limit, spent, reserved, oldest, since, bucket = (int(v) for v in values)
    if server_windows and (since, bucket) != (ref.window.since_ms, ref.window.bucket_ms):
        length, width = rolling(ref)
        if width:
            start = from_ms(since)
            window = dataclasses.replace(
                ref.window,
                since=start,
                bucket=from_ms(bucket),
                resets_at=start + timedelta(milliseconds=length + width),
            )
            ref = dataclasses.replace(ref, window=window)
    return CounterState(ref, limit, spent, reserved, None if oldest < 0 else oldest)


def reserve_args(
    plan: ReservationPlan, now_arg: str, lease_ms: int, allowed: int, server_windows: bool
) -> list[Any]:
    """The script's arguments (its keys come from the store). ``allowed``: the ceiling the
    request caps leave; ``server_windows``: rolling windows are recomputed on the server's
    clock."""
    worst = plan.worst
    numbers = [
        lease_ms,
        worst.requested_ceiling,
        min(plan.min_output, worst.requested_ceiling),
        allowed,
        worst.input_tokens,
        worst.input_cost,
        worst.choices,
        worst.output_rate,
    ]
    stored = []
    for ref in plan.counters:
        budget = ref.budget
        length, width = rolling(ref) if server_windows else (0, 0)
        numbers += (
            budget.limit,
            budget.blocks + 2 * budget.clamps + _UNIT_FLAGS[budget.unit],
            length if width else ref.window.since_ms,
            ref.window.bucket_ms,
            width,
        )
        stored.append((budget.name, ref.member, budget.unit.value))
    return [
        now_arg,
        plan.reservation_id,
        plan.owner,
        orjson.dumps(numbers),
        orjson.dumps(worst),  # a dataclass: an object by field name (`codec.load_worst`)
        codec.dump_template(plan.template),
        orjson.dumps(stored),
    ]


def verdict(
    plan: ReservationPlan, raw: Sequence[Any], server_windows: bool
) -> tuple[Admitted | Refused, bool]:
    """`decide` on the states the script read, and whether it agrees with the script."""
    status = int(raw[0])
    n = len(plan.counters)
    tail = raw[2 + n :] if status == 1 else raw[2:]
    states = [
        state(ref, tail[6 * i : 6 * i + 6], server_windows) for i, ref in enumerate(plan.counters)
    ]
    decision = decide(plan.worst, states, plan.caps, plan.min_output)
    if status == 1:
        amounts = tuple(int(a) for a in raw[2 : 2 + n])
        agrees = (
            isinstance(decision, Admitted)
            and decision.ceiling == int(raw[1])
            and decision.amounts == amounts
        )
    else:
        blocker = int(raw[1])
        agrees = isinstance(decision, Refused) and (
            decision.counter is (states[blocker - 1] if blocker else None)
        )
    return decision, agrees


def held_of(decision: Admitted) -> tuple[StoredCounter, ...]:
    """What an admitted reservation holds, as the store keeps it in memory."""
    return tuple(
        (s.ref.budget.name, s.ref.member, s.ref.window.bucket_ms, s.ref.budget.unit.value, a)
        for s, a in zip(decision.states, decision.amounts, strict=True)
    )
