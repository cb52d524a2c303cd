"""The circuit breaker's state machine, driven by an injected clock: closed -> open after K
consecutive failures -> half-open (one probe) after the cool-down -> closed when the probe
succeeds, open again when it fails; a probe that got no answer is abandoned. The service
(`spendgate.services.breakers`) over the in-memory store; the stores themselves, and
several processes on one store, are in ``tests/storage/test_breakers_store.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from spendgate.clock import ManualClock
from spendgate.domain.breaker import PROBE_WAIT_S, BreakerPolicy, BreakerState, abandoned
from spendgate.services.breakers import CircuitBreakers
from spendgate.storage import Storage, open_storage

KEY = ("key_1", "gpt-4o-mini")
OTHER_MODEL = ("key_1", "gpt-4o")
OTHER_KEY = ("key_2", "gpt-4o-mini")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def storage(clock: ManualClock) -> AsyncIterator[Storage]:
    store = open_storage("memory://", clock=clock)
    await store.open()
    yield store
    await store.close()


def policy(threshold: int, cooldown_s: float) -> BreakerPolicy:
    ms = round(cooldown_s * 1000)
    return BreakerPolicy(threshold, ms, probe_lease_ms=ms)


async def failing(breakers: CircuitBreakers, key: tuple[str, str], times: int) -> None:
    for _ in range(times):
        assert await breakers.wait(key) is None
        await breakers.record(key, ok=False)


async def test_closed_until_k_consecutive_failures(storage: Storage, clock: ManualClock) -> None:
    breakers = CircuitBreakers(policy(3, 10), storage, clock)
    assert await breakers.wait(KEY) is None
    assert not breakers.is_open(KEY)
    await failing(breakers, KEY, 2)
    assert not breakers.is_open(KEY)
    assert await breakers.wait(KEY) is None
    assert await breakers.record(KEY, ok=False) == (True, False)  # the third in a row
    assert breakers.is_open(KEY)
    assert await breakers.wait(KEY) == pytest.approx(10)
    clock.advance(4.5)
    assert await breakers.wait(KEY) == pytest.approx(5.5)
    clock.advance(5.499)
    assert await breakers.wait(KEY) == pytest.approx(0.001)


async def test_a_success_resets_the_count(storage: Storage, clock: ManualClock) -> None:
    breakers = CircuitBreakers(policy(3, 10), storage, clock)
    await failing(breakers, KEY, 2)
    assert await breakers.record(KEY, ok=True) == (False, False)  # it was not open
    assert await storage.breakers() == []  # the stored count is gone
    await failing(breakers, KEY, 2)
    assert not breakers.is_open(KEY)  # 2 + 2 failures, never 3 in a row
    assert await breakers.wait(KEY) is None
    await breakers.record(KEY, ok=False)
    assert breakers.is_open(KEY)


async def test_one_probe_after_the_cooldown_then_closed_on_success(
    storage: Storage, clock: ManualClock
) -> None:
    breakers = CircuitBreakers(policy(2, 5), storage, clock)
    await failing(breakers, KEY, 2)
    clock.advance(4.9)
    assert await breakers.wait(KEY) == pytest.approx(0.1)
    clock.advance(0.1)
    assert await breakers.wait(KEY) is None  # half-open: this caller is the probe
    assert breakers.probing(KEY)
    # while the probe is out, everyone else waits a short while
    clock.advance(0.1)
    assert await breakers.wait(KEY) == PROBE_WAIT_S
    clock.advance(3)
    assert await breakers.wait(KEY) == PROBE_WAIT_S
    assert breakers.is_open(KEY)
    assert await breakers.record(KEY, ok=True) == (False, True)  # the probe closed it
    assert not breakers.is_open(KEY)
    assert not breakers.probing(KEY)
    for _ in range(3):
        assert await breakers.wait(KEY) is None  # closed: all pass
    # closed again means a fresh count: one failure does not re-open it
    await breakers.record(KEY, ok=False)
    assert await breakers.wait(KEY) is None


async def test_a_failed_probe_reopens_for_a_whole_cooldown(
    storage: Storage, clock: ManualClock
) -> None:
    breakers = CircuitBreakers(policy(3, 1), storage, clock)
    await failing(breakers, KEY, 3)
    clock.advance(1.0)
    assert await breakers.wait(KEY) is None  # the probe
    clock.advance(0.25)
    assert await breakers.record(KEY, ok=False) == (True, False)  # opened again
    assert breakers.is_open(KEY)
    assert await breakers.wait(KEY) == pytest.approx(1.0)  # from the probe's failure
    clock.advance(0.75)
    assert await breakers.wait(KEY) == pytest.approx(0.25)
    clock.advance(0.25)
    assert await breakers.wait(KEY) is None  # the next probe
    clock.advance(0.05)
    assert await breakers.wait(KEY) == PROBE_WAIT_S
    await breakers.record(KEY, ok=True)
    assert await breakers.wait(KEY) is None
    assert not breakers.is_open(KEY)


async def test_an_abandoned_probe_lets_the_next_caller_probe(
    storage: Storage, clock: ManualClock
) -> None:
    breakers = CircuitBreakers(policy(1, 2), storage, clock)
    await failing(breakers, KEY, 1)
    clock.advance(2)
    assert await breakers.wait(KEY) is None  # probe sent; its client goes away
    clock.advance(0.1)
    assert await breakers.wait(KEY) == PROBE_WAIT_S
    await breakers.abandon(KEY)
    assert breakers.is_open(KEY)  # still open: nothing was learnt
    assert await breakers.wait(KEY) is None  # a new probe
    await breakers.record(KEY, ok=False)
    assert await breakers.wait(KEY) == pytest.approx(2.0)
    await breakers.abandon(KEY)  # abandoning when no probe is out changes nothing
    clock.advance(1)
    assert await breakers.wait(KEY) == pytest.approx(1.0)
    await breakers.abandon(OTHER_KEY)  # nor for a key never seen
    assert await breakers.wait(OTHER_KEY) is None


async def test_a_probe_never_answered_holds_the_breaker_one_cooldown(
    storage: Storage, clock: ManualClock
) -> None:
    """Its gateway died: the probe's lease ends and the next request probes."""
    first = CircuitBreakers(policy(1, 2), storage, clock)
    await failing(first, KEY, 1)
    clock.advance(2)
    assert await first.wait(KEY) is None  # the probe, never answered
    other = CircuitBreakers(policy(1, 2), storage, clock)  # another process
    await other.sync()
    clock.advance(1.999)
    assert await other.wait(KEY) == PROBE_WAIT_S
    clock.advance(0.001)
    assert await other.wait(KEY) is None
    assert other.probing(KEY)


async def test_breakers_are_per_key_and_model(storage: Storage, clock: ManualClock) -> None:
    breakers = CircuitBreakers(policy(2, 30), storage, clock)
    await failing(breakers, KEY, 2)
    assert breakers.is_open(KEY)
    clock.advance(1)
    assert await breakers.wait(KEY) == pytest.approx(29)
    assert await breakers.wait(OTHER_MODEL) is None
    assert await breakers.wait(OTHER_KEY) is None
    assert not breakers.is_open(OTHER_MODEL)
    assert not breakers.is_open(OTHER_KEY)
    # their own failures count separately
    await failing(breakers, OTHER_KEY, 1)
    assert not breakers.is_open(OTHER_KEY)
    await breakers.record(OTHER_MODEL, ok=True)
    assert breakers.is_open(KEY)
    assert breakers.open_by_model() == {("gpt-4o-mini", "open"): 1}
    clock.advance(29)
    assert breakers.open_by_model() == {("gpt-4o-mini", "half_open"): 1}


async def test_breakers_open_then_half_open_by_model(storage: Storage, clock: ManualClock) -> None:
    """What the `spendgate_breakers_open` gauge reads."""
    breakers = CircuitBreakers(policy(2, 30), storage, clock)
    for key in ("k1", "k2"):
        await failing(breakers, (key, "gpt-4o"), 2)
    await failing(breakers, ("k3", "o4-mini"), 1)  # one failure: still closed
    clock.advance(10)
    assert breakers.open_by_model() == {("gpt-4o", "open"): 2}
    clock.advance(21)
    assert breakers.open_by_model() == {("gpt-4o", "half_open"): 2}
    await breakers.record(("k1", "gpt-4o"), ok=True)
    assert breakers.open_by_model() == {("gpt-4o", "half_open"): 1}


async def test_a_store_that_fails_leaves_the_breakers_to_this_process(
    storage: Storage, clock: ManualClock
) -> None:
    breakers = CircuitBreakers(policy(2, 10), storage, clock)
    await storage.close()  # every store call now fails
    await failing(breakers, KEY, 1)
    assert await breakers.record(KEY, ok=False) == (True, False)
    assert await breakers.wait(KEY) == pytest.approx(10)
    clock.advance(10)
    assert await breakers.wait(KEY) is None  # the probe, decided here
    assert await breakers.record(KEY, ok=True) == (False, True)
    assert await breakers.wait(KEY) is None


async def test_a_breaker_idle_for_an_hour_is_pruned(storage: Storage, clock: ManualClock) -> None:
    breakers = CircuitBreakers(policy(2, 30), storage, clock)
    await failing(breakers, KEY, 2)  # open
    await failing(breakers, OTHER_KEY, 1)
    clock.advance(1800)
    await failing(breakers, OTHER_MODEL, 1)
    clock.advance(1799)
    assert await breakers.prune() == 0
    clock.advance(2)  # an hour and a second after KEY's and OTHER_KEY's last failures
    assert await breakers.prune() == 2
    await breakers.sync()
    assert [s.pair for s in await storage.breakers()] == [OTHER_MODEL]
    assert await breakers.wait(KEY) is None  # as a probe would have been let through
    assert not breakers.is_open(KEY)
    assert policy(2, 3600).forget_before(10_000_000) == 10_000_000 - 7_200_000


def test_the_policy_counts_a_failure_while_open_and_restarts_the_cooldown() -> None:
    rules = policy(2, 10)
    state, opened = rules.failed(None, *KEY, now_ms=0)
    assert (state.failures, state.opened_ms, opened) == (1, None, False)
    state, opened = rules.failed(state, *KEY, now_ms=100)
    assert (state.failures, state.opened_ms, opened) == (2, 100, True)
    # an answer to a request sent before it opened: counted, the cool-down restarts
    state, opened = rules.failed(state, *KEY, now_ms=5000)
    assert (state.failures, state.opened_ms, opened) == (3, 5000, False)
    assert rules.claim(state, 14_999) == (state, False)
    claimed, allowed = rules.claim(state, 15_000)
    assert allowed
    assert claimed is not None
    assert claimed.probe_until_ms == 25_000
    assert abandoned(claimed) == state
    assert abandoned(None) is None
    assert rules.claim(None, 0) == (None, True)
    assert rules.phase(BreakerState(*KEY, failures=1), 0) is None
