"""Circuit breakers per (key, model): after K consecutive upstream failures, fail fast for a
cool-down instead of paying for more failing calls; then let one probe through (half-open)
and close again if it succeeds. Pure: times are passed in (wall-clock milliseconds).

A breaker's state is shared by every gateway process on one counter store (SQLite file,
PostgreSQL, Redis): the failures of all of them count towards K, one opening stops all of
them, and one probe goes out for the whole fleet. The transitions are decided here; each
store applies one atomically (read, decide, write), and each process keeps a mirror of
the states it last saw (`spendgate.services.breakers`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

R = TypeVar("R")

PROBE_WAIT_S = 1.0  # what other callers are told to wait while a probe is in flight
FORGET_MS = 3_600_000  # a breaker with no failure for this long (and past its cool-down) is dropped


@dataclass(frozen=True, slots=True)
class BreakerState:
    key_id: str
    model: str
    failures: int = 0  # consecutive failures, over every process
    opened_ms: int | None = None  # when it last opened; None: closed
    probe_until_ms: int | None = None  # a half-open probe is out until then
    failed_ms: int = 0  # when its last failure was counted

    @property
    def pair(self) -> tuple[str, str]:
        return (self.key_id, self.model)


# A transition as a store applies it: from the stored state (None: no row), the state to
# store (None: delete the row) and what the caller learns.
BreakerDecision = Callable[[BreakerState | None], tuple[BreakerState | None, R]]


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    threshold: int  # K: failures in a row that open it
    cooldown_ms: int  # how long it stays open before a probe
    probe_lease_ms: int  # how long a probe holds the half-open breaker without an answer

    @property
    def cooldown_s(self) -> float:
        return self.cooldown_ms / 1000

    def failed(
        self, previous: BreakerState | None, key_id: str, model: str, now_ms: int
    ) -> tuple[BreakerState, bool]:
        """The state after one more failure, and whether this failure opened it (the K-th
        in a row, or a failed probe). A failure while open restarts the cool-down."""
        failures = (previous.failures if previous else 0) + 1
        probing = previous is not None and previous.probe_until_ms is not None
        was_open = previous is not None and previous.opened_ms is not None
        opens = probing or (not was_open and failures >= self.threshold)
        opened = now_ms if probing or failures >= self.threshold else None
        return BreakerState(key_id, model, failures, opened, None, now_ms), opens

    def wait_ms(self, state: BreakerState | None, now_ms: int) -> int | None:
        """None: closed, a request may go. 0: half-open with no probe out (a request may
        claim the probe). Else the milliseconds a request must wait."""
        if state is None or state.opened_ms is None:
            return None
        left = state.opened_ms + self.cooldown_ms - now_ms
        if left > 0:
            return left
        if state.probe_until_ms is not None and state.probe_until_ms > now_ms:
            return int(PROBE_WAIT_S * 1000)
        return 0

    def claim(self, previous: BreakerState | None, now_ms: int) -> tuple[BreakerState | None, bool]:
        """The state after a request asks to go, and whether it may: closed, yes; open and
        cooling, no; half-open, the first to ask becomes the probe (others wait)."""
        wait = self.wait_ms(previous, now_ms)
        if wait is None:
            return previous, True
        if wait > 0:
            return previous, False
        assert previous is not None
        return replace(previous, probe_until_ms=now_ms + self.probe_lease_ms), True

    def forget_before(self, now_ms: int) -> int:
        """Breakers whose last failure is older than this are dropped (`prune_breakers`):
        nothing failed for an hour (or a cool-down and a probe's lease, if longer), so the
        next request may go, as the probe would. It keeps the stored breakers bounded by the
        pairs failing lately, which every process reads each second."""
        return now_ms - max(FORGET_MS, self.cooldown_ms + self.probe_lease_ms)

    def phase(self, state: BreakerState, now_ms: int) -> str | None:
        """``open`` (cooling), ``half_open`` (the next request probes), None: closed."""
        if state.opened_ms is None:
            return None
        return "open" if now_ms < state.opened_ms + self.cooldown_ms else "half_open"


def abandoned(previous: BreakerState | None) -> BreakerState | None:
    """A probe that ended without an answer (client gone): the next request may probe."""
    if previous is None or previous.probe_until_ms is None:
        return previous
    return replace(previous, probe_until_ms=None)
