"""The circuit breaker's state machine, with explicit (monotonic) times: closed -> open
after K consecutive failures -> half-open (one probe) after the cool-down -> closed when
the probe succeeds, open again when it fails; a probe that got no answer is abandoned."""

from __future__ import annotations

import pytest

from spendgate.domain.breaker import PROBE_WAIT_S, CircuitBreakers

KEY = ("key_1", "gpt-4o-mini")
OTHER_MODEL = ("key_1", "gpt-4o")
OTHER_KEY = ("key_2", "gpt-4o-mini")


def failing(breakers: CircuitBreakers, key: tuple[str, str], times: int, at: float) -> None:
    for _ in range(times):
        assert breakers.wait(key, at) is None
        breakers.record(key, at, ok=False)


def test_closed_until_k_consecutive_failures() -> None:
    breakers = CircuitBreakers(threshold=3, cooldown_s=10)
    assert breakers.wait(KEY, 0) is None
    assert not breakers.is_open(KEY)
    failing(breakers, KEY, 2, at=1)
    assert not breakers.is_open(KEY)
    assert breakers.wait(KEY, 2) is None
    breakers.record(KEY, 3, ok=False)  # the third in a row
    assert breakers.is_open(KEY)
    assert breakers.wait(KEY, 3) == pytest.approx(10)
    assert breakers.wait(KEY, 7.5) == pytest.approx(5.5)
    assert breakers.wait(KEY, 12.999) == pytest.approx(0.001)


def test_a_success_resets_the_count() -> None:
    breakers = CircuitBreakers(threshold=3, cooldown_s=10)
    failing(breakers, KEY, 2, at=0)
    breakers.record(KEY, 1, ok=True)
    failing(breakers, KEY, 2, at=2)
    assert not breakers.is_open(KEY)  # 2 + 2 failures, never 3 in a row
    assert breakers.wait(KEY, 3) is None
    breakers.record(KEY, 3, ok=False)
    assert breakers.is_open(KEY)


def test_one_probe_after_the_cooldown_then_closed_on_success() -> None:
    breakers = CircuitBreakers(threshold=2, cooldown_s=5)
    failing(breakers, KEY, 2, at=100)
    assert breakers.wait(KEY, 104.9) == pytest.approx(0.1)
    assert breakers.wait(KEY, 105) is None  # half-open: this caller is the probe
    # while the probe is out, everyone else waits a short while
    assert breakers.wait(KEY, 105.1) == PROBE_WAIT_S
    assert breakers.wait(KEY, 200) == PROBE_WAIT_S
    assert breakers.is_open(KEY)
    breakers.record(KEY, 105.5, ok=True)
    assert not breakers.is_open(KEY)
    for at in (105.6, 105.7, 105.8):
        assert breakers.wait(KEY, at) is None  # closed: all pass
    # closed again means a fresh count: one failure does not re-open it
    breakers.record(KEY, 106, ok=False)
    assert breakers.wait(KEY, 106) is None


def test_a_failed_probe_reopens_for_a_whole_cooldown() -> None:
    breakers = CircuitBreakers(threshold=3, cooldown_s=1)
    failing(breakers, KEY, 3, at=0)
    assert breakers.wait(KEY, 1.0) is None  # the probe
    breakers.record(KEY, 1.25, ok=False)
    assert breakers.is_open(KEY)
    assert breakers.wait(KEY, 1.25) == pytest.approx(1.0)  # from the probe's failure
    assert breakers.wait(KEY, 2.0) == pytest.approx(0.25)
    assert breakers.wait(KEY, 2.25) is None  # the next probe
    assert breakers.wait(KEY, 2.3) == PROBE_WAIT_S
    breakers.record(KEY, 2.4, ok=True)
    assert breakers.wait(KEY, 2.5) is None
    assert not breakers.is_open(KEY)


def test_an_abandoned_probe_lets_the_next_caller_probe() -> None:
    breakers = CircuitBreakers(threshold=1, cooldown_s=2)
    failing(breakers, KEY, 1, at=0)
    assert breakers.wait(KEY, 2) is None  # probe sent; its client goes away
    assert breakers.wait(KEY, 2.1) == PROBE_WAIT_S
    breakers.abandon(KEY)
    assert breakers.is_open(KEY)  # still open: nothing was learnt
    assert breakers.wait(KEY, 2.2) is None  # a new probe
    breakers.record(KEY, 2.3, ok=False)
    assert breakers.wait(KEY, 2.3) == pytest.approx(2.0)
    breakers.abandon(KEY)  # abandoning when no probe is out changes nothing
    assert breakers.wait(KEY, 3.3) == pytest.approx(1.0)
    breakers.abandon(OTHER_KEY)  # nor for a key never seen
    assert breakers.wait(OTHER_KEY, 3.3) is None


def test_breakers_are_per_key_and_model() -> None:
    breakers = CircuitBreakers(threshold=2, cooldown_s=30)
    failing(breakers, KEY, 2, at=0)
    assert breakers.is_open(KEY)
    assert breakers.wait(KEY, 1) == pytest.approx(29)
    assert breakers.wait(OTHER_MODEL, 1) is None
    assert breakers.wait(OTHER_KEY, 1) is None
    assert not breakers.is_open(OTHER_MODEL)
    assert not breakers.is_open(OTHER_KEY)
    # their own failures count separately
    failing(breakers, OTHER_KEY, 1, at=2)
    assert not breakers.is_open(OTHER_KEY)
    breakers.record(OTHER_MODEL, 3, ok=True)
    assert breakers.is_open(KEY)
