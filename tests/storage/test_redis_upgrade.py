"""A rolling upgrade on one Redis: gateways of the version before run ``reserve_v1.lua``
(the numbers one argument each) and ``charge_v1.lua``, gateways of this version
``reserve_v2.lua`` (the numbers packed in one) and ``charge_v2.lua`` (forgetting written
rows in passing). Both reserve versions decide alike and leave the same reservation and
counters, so a gateway of either version charges, settles or sweeps what the other
reserved. The version before's scripts are in ``scripts_before/`` as it shipped them (a
gateway loads the scripts of its own install), and its calls are made here as it made
them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from budget_samples import budget, plan, ref
from storage_samples import NOW

from conftest import redis_url
from spendgate.clock import ManualClock, to_ms
from spendgate.domain.admission import Admitted, decide
from spendgate.domain.budgets import Unit
from spendgate.storage import ReservationPlan, codec
from spendgate.storage.redis import RedisCounters
from spendgate.storage.redis.connect import PRELUDE

BEFORE = Path(__file__).parent / "scripts_before"

V1_UNITS = {Unit.NANOS: 0, Unit.TOKENS: 1, Unit.REQUESTS: 2, Unit.CONCURRENT: 2}
DUE = timedelta(seconds=60)


def _text(name: str) -> str:
    """A script of the version before, with the prelude both versions share."""
    package = resources.files("spendgate.storage.redis")
    prelude = package.joinpath(f"{PRELUDE}.lua").read_text()
    return prelude + "\n" + (BEFORE / f"{name}.lua").read_text()


@pytest.fixture
async def store() -> AsyncIterator[tuple[RedisCounters, ManualClock]]:
    clock = ManualClock(NOW)
    counters = RedisCounters(redis_url(), clock)
    await counters.open()
    yield counters, clock
    await counters.drop_all()
    await counters.close()


async def _reserve_v1(counters: RedisCounters, p: ReservationPlan, now_ms: int) -> Any:
    """``reserve_v1.lua`` as the version before called it (an injected clock: windows as
    given)."""
    worst = p.worst
    cap_only = decide(worst, (), p.caps, p.min_output)
    assert isinstance(cap_only, Admitted)
    keys = [counters._reservation_key(p.reservation_id), counters._leases, counters._overrides]
    stored = [[r.budget.name, r.member, r.budget.unit.value] for r in p.counters]
    args: list[Any] = [
        str(now_ms),
        p.reservation_id,
        p.owner,
        to_ms(p.expires_at) - now_ms,
        worst.requested_ceiling,
        min(p.min_output, worst.requested_ceiling),
        cap_only.ceiling,
        worst.input_tokens,
        worst.input_cost,
        worst.choices,
        worst.output_rate,
        codec.dump_worst(worst),
        codec.dump_template(p.template),
        codec.dumps(stored),
        len(p.counters),
    ]
    for r in p.counters:
        keys.append(counters._counter_key(r.budget.name, r.member, r.budget.unit.value))
        keys.append(counters._members_key(r.budget.name))
        args += [
            r.budget.name,
            r.budget.limit,
            int(r.budget.blocks),
            int(r.budget.clamps),
            V1_UNITS[r.budget.unit],
            r.window.since_ms,
            r.window.bucket_ms,
            0,
        ]
    return await counters._redis.eval(_text("reserve_v1"), len(keys), *keys, *args)


async def _charge_v1(counters: RedisCounters, rid: str, amounts: list[int], row: Any) -> Any:
    keys = [
        counters._reservation_key(rid),
        counters._leases,
        counters._unwritten,
        counters._row_key(rid),
    ]
    due_ms = DUE // timedelta(milliseconds=1)
    args = [counters._now_arg(), rid, due_ms, codec.dump_template(row), len(amounts)]
    return await counters._redis.eval(_text("charge_v1"), len(keys), *keys, *args, *amounts)


async def test_both_versions_reserve_alike_and_end_each_others_reservations(
    store: tuple[RedisCounters, ManualClock],
) -> None:
    counters, clock = store
    refs = [
        ref(budget("dollars"), clock.now()),
        ref(budget("tokens", 10**7, unit=Unit.TOKENS), clock.now()),
        ref(budget("requests", 1000, unit=Unit.REQUESTS, period="daily"), clock.now()),
    ]
    old, new = plan(refs, clock.now()), plan(refs, clock.now())
    raw = await _reserve_v1(counters, old, to_ms(clock.now()))
    decision = await counters.reserve(new)
    assert isinstance(decision, Admitted)
    assert [int(v) for v in raw[: 2 + len(refs)]] == [1, decision.ceiling, *decision.amounts]

    redis = counters._redis
    held_old = await redis.hgetall(counters._reservation_key(old.reservation_id))
    held_new = await redis.hgetall(counters._reservation_key(new.reservation_id))
    assert held_old.pop(b"template") != held_new.pop(b"template")  # its own request id
    assert held_old == held_new

    states = await counters.counter_states(tuple(refs), clock.now())
    assert [s.reserved for s in states] == [2 * a for a in decision.amounts]

    amounts = [10, 20, 1]
    row = dataclasses.replace(old.template, cost_nanos=10)
    assert await counters.charge(old.reservation_id, amounts, row, DUE)  # v2 ends v1's
    new_row = dataclasses.replace(new.template, cost_nanos=10)
    assert await _charge_v1(counters, new.reservation_id, amounts, new_row) == 1  # and back
    states = await counters.counter_states(tuple(refs), clock.now())
    assert [(s.spent, s.reserved) for s in states] == [(2 * a, 0) for a in amounts]
    kept = await counters.unwritten(clock.now() + 2 * DUE, 10)
    assert sorted(r.request_id for r in kept) == sorted([old.reservation_id, new.reservation_id])
