"""The circuit breakers of every gateway process on one counter store, with a mirror in
each process so that a request with a closed breaker costs no storage call.

* A request asks the mirror: closed, it goes; open and cooling, it is refused; half-open,
  it asks the store to be the probe (one store call, once per cool-down) and goes if it
  is first.
* A failure is counted in the store (one call, on a path that already waited for a
  failing upstream) and the mirror takes the state it returns: the failures of every
  process count towards K, and the process whose failure opens the breaker says so.
* A success clears the breaker in the store only when the mirror knows of one (a process
  that has never seen a failure of the pair makes no call).
* `sync` reads every stored breaker into the mirror (`Gateway` runs it every
  `SYNC_INTERVAL_S`): a breaker another process opened stops this one within that time.

If the store fails, the breakers go on in this process alone (the mirror decides): a
storage outage must not make every upstream call fail.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from spendgate.clock import Clock, to_ms
from spendgate.domain.breaker import BreakerPolicy, BreakerState, abandoned
from spendgate.errors import StorageError
from spendgate.storage import Storage

log = logging.getLogger("spendgate.breakers")

SYNC_INTERVAL_S = 1.0
PRUNE_EVERY = 60  # syncs: the idle breakers are dropped about once a minute

T = TypeVar("T")
Pair = tuple[str, str]  # (key id, model)
# A transition: the state to store, and (the state the mirror keeps, what the caller learns).
Outcome = tuple[BreakerState | None, tuple[BreakerState | None, T]]


class CircuitBreakers:
    def __init__(self, policy: BreakerPolicy, storage: Storage, clock: Clock) -> None:
        self.policy = policy
        self._storage = storage
        self._clock = clock
        self._mirror: dict[Pair, BreakerState] = {}
        self._probes: set[Pair] = set()  # half-open probes this process sent, unanswered
        self._touched: set[Pair] | None = None  # changed here while `sync` reads the store

    @property
    def threshold(self) -> int:
        return self.policy.threshold

    @property
    def cooldown_s(self) -> float:
        return self.policy.cooldown_s

    def _now_ms(self) -> int:
        return to_ms(self._clock.now())

    async def wait(self, pair: Pair) -> float | None:
        """None if a request may go upstream now (as the probe, when half-open); else the
        seconds until it may."""
        now = self._now_ms()
        wait = self.policy.wait_ms(self._mirror.get(pair), now)
        if wait is None:
            return None
        if wait > 0:
            return wait / 1000
        policy = self.policy

        def claim(previous: BreakerState | None) -> Outcome[int | None]:
            state, allowed = policy.claim(previous, now)
            return state, (state, None if allowed else policy.wait_ms(previous, now))

        state, waiting = await self._apply(pair, claim, "claim a probe")
        if waiting is not None:
            return waiting / 1000
        if state is not None and state.probe_until_ms is not None:
            self._probes.add(pair)  # this request is the probe
        return None

    async def record(self, pair: Pair, *, ok: bool) -> tuple[bool, bool]:
        """Count an upstream answer: (opened, closed), whether this failure opened the
        breaker (the K-th in a row over every process, or a failed probe) and whether this
        success closed an open one."""
        self._probes.discard(pair)
        if ok:
            if pair not in self._mirror:
                return False, False

            def clear(previous: BreakerState | None) -> Outcome[bool]:
                return None, (None, previous is not None and previous.opened_ms is not None)

            return False, (await self._apply(pair, clear, "clear"))[1]
        now = self._now_ms()
        policy = self.policy

        def fail(previous: BreakerState | None) -> Outcome[bool]:
            state, opened = policy.failed(previous, pair[0], pair[1], now)
            return state, (state, opened)

        return (await self._apply(pair, fail, "count a failure"))[1], False

    def probing(self, pair: Pair) -> bool:
        """Whether this process sent the pair's half-open probe and has no answer yet."""
        return pair in self._probes

    async def abandon(self, pair: Pair) -> None:
        """A probe this process sent ended without an answer (the client went away): the
        next request may probe."""
        if pair not in self._probes:
            return
        self._probes.discard(pair)

        def give_up(previous: BreakerState | None) -> Outcome[None]:
            state = abandoned(previous)
            return state, (state, None)

        await self._apply(pair, give_up, "give a probe up")

    async def sync(self) -> None:
        """Take every stored breaker into the mirror (those of other processes too); a
        breaker this process changed meanwhile keeps what it learnt then (it is newer)."""
        touched: set[Pair] = set()
        self._touched = touched
        try:
            stored = {state.pair: state for state in await self._storage.breakers()}
        finally:
            self._touched = None
        for pair in touched:
            mine = self._mirror.get(pair)
            if mine is None:
                stored.pop(pair, None)
            else:
                stored[pair] = mine
        self._mirror = stored

    async def prune(self) -> int:
        """Drop the stored breakers nothing failed on lately (`BreakerPolicy.forget_before`)."""
        return await self._storage.prune_breakers(self.policy.forget_before(self._now_ms()))

    def is_open(self, pair: Pair) -> bool:
        state = self._mirror.get(pair)
        return state is not None and state.opened_ms is not None

    def open_by_model(self) -> dict[tuple[str, str], int]:
        """How many breakers are open, per (model, ``open`` or ``half_open``), as this
        process last saw them: half-open once the cool-down has passed."""
        now = self._now_ms()
        found: dict[tuple[str, str], int] = {}
        for (_key_id, model), state in list(self._mirror.items()):
            phase = self.policy.phase(state, now)
            if phase is not None:
                found[(model, phase)] = found.get((model, phase), 0) + 1
        return found

    async def _apply(
        self, pair: Pair, decide: Callable[[BreakerState | None], Outcome[T]], what: str
    ) -> tuple[BreakerState | None, T]:
        """One transition in the store (in this process alone if the store fails); the
        mirror takes the state it leaves."""
        try:
            state, result = await self._storage.update_breaker(pair[0], pair[1], decide)
        except StorageError as exc:
            log.warning(
                "circuit breakers: the counter store failed; deciding in this process alone",
                extra={"action": what, "error": str(exc)},
            )
            state, result = decide(self._mirror.get(pair))[1]
        if state is None:
            self._mirror.pop(pair, None)
        else:
            self._mirror[pair] = state
        if self._touched is not None:
            self._touched.add(pair)
        return state, result
