"""Rate-limit headers in each dialect's own shape, from the counters a request was admitted
against. Pure.

OpenAI: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets as Go-style
durations (``6m0s``, ``1s``, ``12ms``). Anthropic: ``anthropic-ratelimit-{requests,tokens}-
{limit,remaining,reset}`` with resets as RFC 3339 times. Each reports the tightest limit of
its kind (shadow limits are not reported: they do not bind).
"""

from __future__ import annotations

from datetime import UTC, datetime

from spendgate.domain.admission import Admitted, CounterState
from spendgate.domain.budgets import Kind, Unit
from spendgate.errors import Dialect

_NAMES = {Unit.REQUESTS: "requests", Unit.TOKENS: "tokens"}


def go_duration(seconds: float) -> str:
    """``0.012`` -> ``12ms``; ``360`` -> ``6m0s``; ``3725.5`` -> ``1h2m5.5s``."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    millis = round(seconds * 1000)
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{hours}h" if hours else ""
    if hours or minutes:
        out += f"{minutes}m"
    return out + f"{secs}s"


def _tightest(admitted: Admitted) -> dict[Unit, tuple[CounterState, int]]:
    best: dict[Unit, tuple[CounterState, int]] = {}
    for state, amount in zip(admitted.states, admitted.amounts, strict=True):
        budget = state.ref.budget
        if budget.kind is not Kind.LIMIT or budget.shadow or budget.unit not in _NAMES:
            continue
        left = state.room - amount
        if budget.unit not in best or left < best[budget.unit][1]:
            best[budget.unit] = (state, left)
    return best


def _trio(
    out: dict[str, str],
    dialect: Dialect,
    name: str,
    limit: int,
    left: int,
    resets: datetime,
    now: datetime,
) -> None:
    if dialect is Dialect.OPENAI:
        out[f"x-ratelimit-limit-{name}"] = str(limit)
        out[f"x-ratelimit-remaining-{name}"] = str(max(0, left))
        out[f"x-ratelimit-reset-{name}"] = go_duration((resets - now).total_seconds())
    else:
        out[f"anthropic-ratelimit-{name}-limit"] = str(limit)
        out[f"anthropic-ratelimit-{name}-remaining"] = str(max(0, left))
        stamp = resets.astimezone(UTC).replace(microsecond=0).isoformat()
        out[f"anthropic-ratelimit-{name}-reset"] = stamp.replace("+00:00", "Z")


def limit_headers(admitted: Admitted, dialect: Dialect, now: datetime) -> dict[str, str]:
    out: dict[str, str] = {}
    for unit, (state, left) in _tightest(admitted).items():
        resets = state.frees_at(now, adding=True) or now
        _trio(out, dialect, _NAMES[unit], state.limit, left, resets, now)
    return out


def refusal_headers(state: CounterState, now: datetime) -> dict[Dialect, dict[str, str]]:
    """The headers of a 429 from a request or token limit, in both dialects."""
    name = _NAMES.get(state.ref.budget.unit)
    if name is None:
        return {}
    resets = state.frees_at(now) or now
    headers: dict[Dialect, dict[str, str]] = {}
    for dialect in Dialect:
        headers[dialect] = {}
        _trio(headers[dialect], dialect, name, state.limit, state.room, resets, now)
    return headers
