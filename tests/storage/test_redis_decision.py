"""The Redis reserve script makes exactly `spendgate.domain.admission.decide`'s decision.

Random counter states are written into a Redis key prefix of this test's own (the shared
server on 127.0.0.1:6379), a random request is reserved through `RedisCounters`, and the
result must equal `decide` run in Python on the states written; the amounts the script
added to each counter's reserved total must be the decision's amounts. Numbers range up
to the store's exact bound (2^53), where doubles in Lua would round if handled naively.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Iterator
from importlib import resources
from uuid import uuid4

import pytest
from budget_samples import budget, plan, ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW

from conftest import REDIS
from spendgate.clock import ManualClock
from spendgate.domain.admission import CounterState, WorstCase, decide
from spendgate.domain.budgets import Kind, RequestCap, Scoped, Unit
from spendgate.errors import StorageError
from spendgate.storage import BudgetOverride
from spendgate.storage.redis import RedisCounters
from spendgate.storage.redis.bounds import EXACT, MAX_OUTPUT

_ids = itertools.count()
BIG = EXACT - 1

amounts = st.one_of(st.integers(0, 5_000), st.integers(0, 10**9), st.integers(0, BIG // 2))
counter_specs = st.tuples(
    st.sampled_from(list(Unit)),
    st.sampled_from([Kind.BUDGET, Kind.LIMIT]),
    st.booleans(),  # hard
    st.booleans(),  # shadow
    st.one_of(st.integers(0, 10_000), st.integers(0, 10**10), st.integers(0, BIG)),  # limit
    amounts,  # spent
    amounts,  # reserved
    st.one_of(st.none(), st.integers(0, 10**10), st.integers(0, BIG)),  # override
)
worsts = st.builds(
    WorstCase,
    input_tokens=st.one_of(st.integers(0, 2_000), st.integers(0, 10**7)),
    input_exact=st.booleans(),
    requested_ceiling=st.one_of(st.integers(0, 4_000), st.integers(0, 10**6)),
    choices=st.integers(1, 4),
    input_cost=st.one_of(st.integers(0, 10**6), st.integers(0, 10**13)),
    output_rate=st.one_of(st.just(0), st.integers(1, 1_000), st.integers(1, 10**12)),
)
caps = st.lists(
    st.one_of(st.none(), st.integers(0, 10**7), st.integers(0, 10**13)), max_size=2
).map(
    lambda limits: tuple(
        RequestCap(Scoped(budget().target.scope, "*", ()), None, n) for n in limits
    )
)


@pytest.fixture
def store() -> Iterator[tuple[asyncio.AbstractEventLoop, RedisCounters]]:
    loop = asyncio.new_event_loop()
    counters = RedisCounters(f"{REDIS}?prefix=sgtest-{uuid4().hex[:12]}", ManualClock(NOW))
    loop.run_until_complete(counters.open())
    yield loop, counters
    loop.run_until_complete(counters.drop_all())
    loop.run_until_complete(counters.close())
    loop.close()


def test_the_script_decides_as_decide_does(
    store: tuple[asyncio.AbstractEventLoop, RedisCounters],
) -> None:
    loop, counters = store
    redis = counters._redis

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        specs=st.lists(counter_specs, min_size=1, max_size=4),
        worst=worsts,
        request_caps=caps,
        min_output=st.one_of(st.integers(0, 300), st.integers(0, 10**6)),
    )
    def check(specs: list, worst: WorstCase, request_caps: tuple, min_output: int) -> None:
        loop.run_until_complete(run(specs, worst, request_caps, min_output))

    async def run(specs: list, worst: WorstCase, request_caps: tuple, min_output: int) -> None:
        n = next(_ids)
        refs, seeded = [], []
        for i, (unit, kind, hard, shadow, limit, spent, reserved, override) in enumerate(specs):
            spec = dataclasses.replace(
                budget(f"b{n}-{i}", limit, unit=unit, hard=hard), kind=kind, shadow=shadow
            )
            counter = ref(spec, NOW)
            refs.append(counter)
            key = counters._counter_key(spec.name, counter.member, unit.value)
            bucket = counter.window.bucket_ms
            old = bucket - 1  # before the window: never counted
            await redis.hset(
                key,
                mapping={f"s{bucket}": spent, f"r{bucket}": reserved, f"s{old}": 7, f"r{old}": 0},
            )
            if override is not None:
                await counters.set_override(BudgetOverride(spec.name, override, None, NOW))
            effective = limit if override is None else override
            seeded.append(CounterState(counter, effective, spent, reserved))
        reservation = plan(refs, NOW, worst=worst, min_output=min_output, caps=request_caps)
        expected = decide(worst, seeded, request_caps, min_output)
        try:
            got = await counters.reserve(reservation)
        except StorageError as exc:
            # Only a plan beyond the exact range may be turned down.
            message = str(exc)
            assert "exact" in message or "at most" in message, message
            assert worst.requested_ceiling * worst.choices > MAX_OUTPUT or any(
                worst.amount(r.budget.unit, worst.requested_ceiling) >= EXACT for r in refs
            )
            return
        assert got == expected
        for counter, state in zip(refs, seeded, strict=True):
            key = counters._counter_key(
                counter.budget.name, counter.member, counter.budget.unit.value
            )
            stored = int(await redis.hget(key, f"r{counter.window.bucket_ms}"))
            added = stored - state.reserved
            index = refs.index(counter)
            assert added == (got.amounts[index] if hasattr(got, "amounts") else 0)

    check()


def test_limits_beyond_the_exact_range_are_refused(
    store: tuple[asyncio.AbstractEventLoop, RedisCounters],
) -> None:
    loop, counters = store
    too_big = budget("huge", EXACT)
    with pytest.raises(StorageError, match=r"2\^53"):
        loop.run_until_complete(counters.reserve(plan([ref(too_big, NOW)], NOW)))
    with pytest.raises(StorageError, match=r"2\^53"):
        loop.run_until_complete(counters.set_override(BudgetOverride("x", EXACT, None, NOW)))
    fits = budget("fits", EXACT - 1)
    assert loop.run_until_complete(counters.reserve(plan([ref(fits, NOW)], NOW)))


def test_the_script_is_exact_where_doubles_round(
    store: tuple[asyncio.AbstractEventLoop, RedisCounters],
) -> None:
    """A dollar budget whose room is the cost of ``k`` tokens, give or take a nano-dollar:
    the exact largest ceiling is ``k`` or ``k - 1``, and at high prices the products the
    arithmetic needs (room x 10^6, tokens x rate) are far beyond 2^53."""
    loop, counters = store

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        k=st.integers(1, 10**6),
        choices=st.integers(1, 4),
        rate=st.one_of(st.integers(10**9, 10**12), st.integers(1, 10**12)),
        input_cost=st.integers(0, 10**12),
        delta=st.integers(-2, 2),
    )
    def check(k: int, choices: int, rate: int, input_cost: int, delta: int) -> None:
        worst = WorstCase(10, True, k + 5, choices, input_cost, rate)
        limit = max(0, worst.amount(Unit.NANOS, k) + delta)
        spec = budget(f"edge{next(_ids)}", limit)
        reservation = plan([ref(spec, NOW)], NOW, worst=worst, min_output=0)
        expected = decide(worst, [CounterState(reservation.counters[0], limit, 0, 0)], (), 0)
        got = loop.run_until_complete(counters.reserve(reservation))
        assert got == expected

    check()


def _divisor_and_quotient(d: int, s: int, lift: int) -> tuple[int, int] | None:
    """A quotient ``t`` with ``t * d`` congruent to ``s`` modulo 10^6: then
    ``a = (t * d - s) / 10^6`` is an integer whose ``a * 10^6 / d`` falls a hair short of
    ``t``, the case a double rounds up to ``t``."""
    if d % 2 == 0 or d % 5 == 0:
        return None
    t = s * pow(d, -1, 10**6) % 10**6 + lift * 10**6
    return (d, t) if t > 0 else None


def test_the_integer_helpers_are_exact(
    store: tuple[asyncio.AbstractEventLoop, RedisCounters],
) -> None:
    """``mega_div`` and ``token_cost`` of the scripts' prelude, on the values where a
    double's rounding would cross an integer."""
    loop, counters = store
    prelude = (resources.files("spendgate.storage.redis") / "common_v1.lua").read_text()
    script = prelude + (
        "\nlocal a, b = tonumber(ARGV[2]), tonumber(ARGV[3])\n"
        "if ARGV[4] == 'div' then return mega_div(a, b) end\n"
        "return token_cost(a, b)\n"
    )
    redis = counters._redis

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        d=st.integers(10**9, 4 * 10**12),
        s=st.integers(1, 500),
        lift=st.integers(0, 8),
        tokens=st.integers(1, MAX_OUTPUT),
        rate=st.integers(0, 10**12),
    )
    def check(d: int, s: int, lift: int, tokens: int, rate: int) -> None:
        found = _divisor_and_quotient(d, s, lift)
        if found is not None:
            _, t = found
            a = (t * d - s) // 10**6
            if a < EXACT:
                got = loop.run_until_complete(redis.eval(script, 0, "", a, d, "div"))
                assert got == a * 10**6 // d == t - 1
        if tokens * rate // 10**6 < EXACT // 2:
            got = loop.run_until_complete(redis.eval(script, 0, "", tokens, rate, "cost"))
            assert got == -(-tokens * rate // 10**6)

    check()
