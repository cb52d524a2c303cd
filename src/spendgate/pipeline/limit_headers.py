"""Rate-limit headers from the counters a request was admitted against (or refused by):
which windows a client is told about, rendered by its dialect. Pure.

Each dialect reports the tightest limit of each kind (requests, tokens); shadow limits are
not reported: they do not bind.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from spendgate import dialects
from spendgate.domain.admission import Admitted, CounterState
from spendgate.domain.budgets import Kind, Unit
from spendgate.domain.models import Dialect
from spendgate.errors import RateWindow

_KINDS: dict[Unit, Literal["requests", "tokens"]] = {
    Unit.REQUESTS: "requests",
    Unit.TOKENS: "tokens",
}


def _tightest(admitted: Admitted) -> dict[Unit, tuple[CounterState, int]]:
    """The tightest request and token limit (state, what is left after the request), in
    the order each kind is first met. Units are compared by identity: hashing an Enum
    member runs Python code, and this runs on every admitted request."""
    requests: tuple[CounterState, int] | None = None
    tokens: tuple[CounterState, int] | None = None
    tokens_first = False
    for state, amount in zip(admitted.states, admitted.amounts, strict=True):
        budget = state.ref.budget
        if budget.kind is not Kind.LIMIT or budget.shadow:
            continue
        unit = budget.unit
        left = state.room - amount
        if unit is Unit.REQUESTS:
            if requests is None or left < requests[1]:
                requests = (state, left)
        elif unit is Unit.TOKENS:
            if tokens is None:
                tokens_first = requests is None
            if tokens is None or left < tokens[1]:
                tokens = (state, left)
    best: dict[Unit, tuple[CounterState, int]] = {}
    kinds = ((Unit.REQUESTS, requests), (Unit.TOKENS, tokens))
    for unit, found in reversed(kinds) if tokens_first else kinds:
        if found is not None:
            best[unit] = found
    return best


def admitted_windows(admitted: Admitted, now: datetime) -> list[RateWindow]:
    """The tightest request and token limit of an admitted request, after it."""
    return [
        RateWindow(
            kind=_KINDS[unit],
            limit=state.limit,
            remaining=left,
            resets_at=state.frees_at(now, adding=True) or now,
            now=now,
        )
        for unit, (state, left) in _tightest(admitted).items()
    ]


def limit_headers(admitted: Admitted, dialect: Dialect, now: datetime) -> dict[str, str]:
    return dialects.adapter(dialect).rate_headers(admitted_windows(admitted, now))


def refusal_window(
    state: CounterState, now: datetime, frees_at: datetime | None = None
) -> RateWindow | None:
    """The window of a request or token limit that refused a request (None for others);
    ``frees_at``: when room comes, if before its oldest bucket leaves the window."""
    kind = _KINDS.get(state.ref.budget.unit)
    if kind is None:
        return None
    resets = frees_at or state.frees_at(now) or now
    return RateWindow(kind=kind, limit=state.limit, remaining=state.room, resets_at=resets, now=now)
