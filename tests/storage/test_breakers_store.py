"""Circuit breakers in the counter store, on every backend: one transition at a time, read
back by every process; and, on the stores that several processes share (SQLite file,
PostgreSQL, Redis), the failures of two processes count together, an opening by one stops
the other, and one probe goes out for both, however many ask at once."""

from __future__ import annotations

import asyncio

import pytest

from spendgate.clock import ManualClock
from spendgate.domain.breaker import PROBE_WAIT_S, BreakerPolicy, BreakerState
from spendgate.services.breakers import CircuitBreakers
from spendgate.storage import Storage

KEY = ("key_1", "gpt-4o-mini")
POLICY = BreakerPolicy(threshold=3, cooldown_ms=10_000, probe_lease_ms=10_000)


def fail(previous: BreakerState | None) -> tuple[BreakerState, bool]:
    state, opened = POLICY.failed(previous, *KEY, now_ms=1_000)
    return state, opened


async def test_a_transition_is_stored_and_read_back(storage: Storage) -> None:
    assert await storage.breakers() == []
    assert await storage.update_breaker(*KEY, fail) is False
    assert await storage.update_breaker(*KEY, fail) is False
    assert await storage.update_breaker(*KEY, fail) is True  # the third opens it
    opened = BreakerState(*KEY, failures=3, opened_ms=1_000, failed_ms=1_000)
    assert await storage.breakers() == [opened]
    other = ("key_2", "claude-haiku-4-5")
    assert await storage.update_breaker(*other, lambda p: (POLICY.failed(p, *other, 5)[0], 1))
    assert sorted(await storage.breakers(), key=lambda s: s.key_id) == [
        opened,
        BreakerState(*other, failures=1, failed_ms=5),
    ]

    def claim(previous: BreakerState | None) -> tuple[BreakerState | None, bool]:
        return POLICY.claim(previous, 11_000)

    assert await storage.update_breaker(*KEY, claim) is True  # half-open: the probe
    assert await storage.update_breaker(*KEY, claim) is False  # one probe only
    stored = {s.pair: s for s in await storage.breakers()}
    assert stored[KEY].probe_until_ms == 21_000
    assert await storage.update_breaker(*KEY, lambda previous: (None, previous)) == stored[KEY]
    assert [s.pair for s in await storage.breakers()] == [other]


async def test_breakers_nothing_failed_on_lately_are_pruned(storage: Storage) -> None:
    for key_id, at in (("old", 1_000), ("recent", 2_000), ("new", 3_000)):
        await storage.update_breaker(
            key_id, "m", lambda p, k=key_id, t=at: (POLICY.failed(p, k, "m", t)[0], None)
        )
    assert await storage.prune_breakers(2_000) == 1  # failed before 2,000: "old"
    assert sorted(s.key_id for s in await storage.breakers()) == ["new", "recent"]
    assert await storage.prune_breakers(2_000) == 0


SHARED = ["sqlite", "redis", "postgres", "redis-pg"]  # memory and split share nothing


@pytest.mark.parametrize("backend", SHARED)
async def test_two_processes_share_one_breaker(
    storage: Storage, second_storage: Storage, clock: ManualClock
) -> None:
    a = CircuitBreakers(POLICY, storage, clock)
    b = CircuitBreakers(POLICY, second_storage, clock)
    for _ in range(2):
        assert await a.wait(KEY) is None
        assert await a.record(KEY, ok=False) == (False, False)
    assert await b.wait(KEY) is None  # b's mirror knows nothing yet: no store call
    assert await b.record(KEY, ok=False) == (True, False)  # the third failure of the two
    assert await a.wait(KEY) is None  # a has not looked since
    await a.sync()
    assert a.is_open(KEY)
    assert await a.wait(KEY) == pytest.approx(10)
    clock.advance(10)
    # half-open: many requests of both processes at once, one probe
    waits = await asyncio.gather(*(p.wait(KEY) for p in (a, b) * 8))
    assert sorted(waits, key=lambda w: -1 if w is None else w) == [None] + [PROBE_WAIT_S] * 15
    prober, other = (a, b) if a.probing(KEY) else (b, a)
    assert not other.probing(KEY)
    assert await prober.record(KEY, ok=True) == (False, True)  # the probe closes it
    assert await second_storage.breakers() == []
    assert await storage.breakers() == []
    await other.sync()
    assert await other.wait(KEY) is None
    assert not other.is_open(KEY)


@pytest.mark.parametrize("backend", SHARED)
async def test_failures_from_two_processes_at_once_are_all_counted(
    storage: Storage, second_storage: Storage, clock: ManualClock
) -> None:
    a = CircuitBreakers(BreakerPolicy(40, 10_000, 10_000), storage, clock)
    b = CircuitBreakers(BreakerPolicy(40, 10_000, 10_000), second_storage, clock)
    outcomes = await asyncio.gather(*(p.record(KEY, ok=False) for p in (a, b) * 20))
    assert [opened for opened, _ in outcomes].count(True) == 1  # the 40th, whoever sent it
    (state,) = await storage.breakers()
    assert state.failures == 40
    assert state.opened_ms is not None
