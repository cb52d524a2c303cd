"""Circuit breakers per (key, model): after K consecutive upstream failures, fail fast for a
cool-down instead of paying for more failing calls; then let one probe through (half-open)
and close again if it succeeds. Pure: times are passed in (monotonic seconds).

Breakers live in each gateway process's memory, like Envoy's outlier detection: N
processes may each let K failures through before they open.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBE_WAIT_S = 1.0  # what other callers are told to wait while a probe is in flight


@dataclass(slots=True)
class _State:
    failures: int = 0
    opened_at: float | None = None
    probing: bool = False


class CircuitBreakers:
    def __init__(self, threshold: int, cooldown_s: float) -> None:
        self.threshold = threshold
        self.cooldown_s = cooldown_s
        self._states: dict[tuple[str, str], _State] = {}

    def wait(self, key: tuple[str, str], now: float) -> float | None:
        """None if a request may go upstream now; else the seconds until it may."""
        state = self._states.get(key)
        if state is None or state.opened_at is None:
            return None
        left = state.opened_at + self.cooldown_s - now
        if left > 0:
            return left
        if state.probing:
            return PROBE_WAIT_S
        state.probing = True  # half-open: this request is the probe
        return None

    def record(self, key: tuple[str, str], now: float, *, ok: bool) -> bool:
        """Count an upstream answer; True when this failure opens the circuit (the K-th in
        a row, or a failed half-open probe)."""
        if ok:
            self._states.pop(key, None)
            return False
        state = self._states.setdefault(key, _State())
        state.failures += 1
        opens = state.probing or (state.opened_at is None and state.failures >= self.threshold)
        if state.probing or state.failures >= self.threshold:
            state.opened_at = now
        state.probing = False
        return opens

    def abandon(self, key: tuple[str, str]) -> None:
        """A probe that ended without an answer (client gone): let the next one probe."""
        state = self._states.get(key)
        if state is not None:
            state.probing = False

    def open_by_model(self, now: float) -> dict[tuple[str, str], int]:
        """How many breakers are open, per (model, ``open`` or ``half_open``): half-open
        once the cool-down has passed (the next request is a probe)."""
        found: dict[tuple[str, str], int] = {}
        for (_key_id, model), state in list(self._states.items()):
            if state.opened_at is None:
                continue
            phase = "open" if now < state.opened_at + self.cooldown_s else "half_open"
            found[(model, phase)] = found.get((model, phase), 0) + 1
        return found

    def is_open(self, key: tuple[str, str]) -> bool:
        state = self._states.get(key)
        return state is not None and state.opened_at is not None
