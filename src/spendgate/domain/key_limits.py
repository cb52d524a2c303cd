"""Budgets and limits a key carries itself, set when the key is made (`spendgate keys create
--budget-usd 5 --period daily --requests 60/minute`) and stored with it, so they apply from
its first request, in every gateway process, with no config edit or reload. Changed with
`keys update` (or for a while with a runtime override, `budgets set-limit key:<id> ...`).

Each is a budget of scope ``key`` whose only member is that key: ``key:<id>`` (dollars per
period, hard: clamps and refuses like a configured budget) and ``key:<id>:requests/minute``
(each rate of requests or tokens: a rate limit, like a configured ``limits`` entry). They
count and refuse alongside the configured budgets; whichever can afford the least decides.
"""

from __future__ import annotations

from dataclasses import dataclass

from spendgate.domain.budgets import (
    MAX_LIMIT,
    Budget,
    BudgetScope,
    Kind,
    Scoped,
    Unit,
    limit_bound,
    limit_period,
)
from spendgate.domain.identity import ApiKey
from spendgate.domain.periods import Period
from spendgate.domain.rates import parse_rates
from spendgate.money import dollars_to_nanos, format_dollars

KEY_BUDGET_PREFIX = "key:"  # budget names; a configured name never starts a key id after it
DEFAULT_PERIOD = "monthly"

# Where they are kept: the key's metadata (stored with the key, read with it on each request).
_USD, _PERIOD, _REQUESTS, _TOKENS = "budget_usd", "budget_period", "limit_requests", "limit_tokens"


@dataclass(frozen=True, slots=True)
class KeyLimits:
    budget_usd: str | None = None  # a dollar amount per `period`
    period: str = DEFAULT_PERIOD  # hourly, daily, weekly, monthly, lifetime or rolling:<N>h
    requests: str | None = None  # rates, as in a limits entry: "60/minute; 1000/day"
    tokens: str | None = None  # "200000/hour"

    @classmethod
    def of(cls, key: ApiKey) -> KeyLimits:
        meta = key.metadata
        return cls(
            budget_usd=meta.get(_USD),
            period=meta.get(_PERIOD, DEFAULT_PERIOD),
            requests=meta.get(_REQUESTS),
            tokens=meta.get(_TOKENS),
        )

    def __bool__(self) -> bool:
        return bool(self.budget_usd or self.requests or self.tokens)

    def metadata(self, others: dict[str, str]) -> dict[str, str]:
        """``others`` (a key's metadata) with these limits in place of the old ones."""
        kept = {k: v for k, v in others.items() if k not in (_USD, _PERIOD, _REQUESTS, _TOKENS)}
        if self.budget_usd is not None:
            kept[_USD] = self.budget_usd
            kept[_PERIOD] = self.period
        if self.requests is not None:
            kept[_REQUESTS] = self.requests
        if self.tokens is not None:
            kept[_TOKENS] = self.tokens
        return kept

    def to_json(self) -> dict[str, str | None]:
        """By the names the admin API and the CLI's --json use."""
        return {
            "budget_usd": self.budget_usd,
            "budget_period": self.period if self.budget_usd is not None else None,
            "limit_requests": self.requests,
            "limit_tokens": self.tokens,
        }

    def describe(self) -> str:
        """``$5.00 daily; 60/minute requests``; ``-`` for none."""
        parts = []
        if self.budget_usd is not None:
            parts.append(f"{_usd(dollars_to_nanos(self.budget_usd))} {self.period}")
        if self.requests is not None:
            parts.append(f"{self.requests} requests")
        if self.tokens is not None:
            parts.append(f"{self.tokens} tokens")
        return "; ".join(parts) or "-"


def _usd(nanos: int) -> str:
    """Cents when they say it all ($5.00), else every digit that counts ($0.0002)."""
    cents = format_dollars(nanos, 2)
    return cents if dollars_to_nanos(cents) == nanos else format_dollars(nanos, 9).rstrip("0")


def key_budget_name(key_id: str) -> str:
    return f"{KEY_BUDGET_PREFIX}{key_id}"


def key_budgets(key_id: str, limits: KeyLimits, *, ceiling: int = MAX_LIMIT) -> tuple[Budget, ...]:
    """The budgets ``limits`` give the key ``key_id``; ValueError names what is wrong
    (an amount above ``ceiling``, the largest limit the counter store keeps, among them)."""
    target = Scoped(BudgetScope.KEY, key_id, ())
    name = key_budget_name(key_id)
    made: list[Budget] = []
    if limits.budget_usd is not None:
        try:
            amount = dollars_to_nanos(limits.budget_usd)
        except ValueError:
            raise ValueError(
                f"budget_usd must be a dollar amount like 25.00, not {limits.budget_usd!r}"
            ) from None
        if amount <= 0:
            raise ValueError("budget_usd must be more than 0")
        if amount > ceiling:
            raise ValueError(f"budget_usd must be at most {limit_bound(Unit.NANOS, ceiling)}")
        made.append(
            Budget(
                name=name,
                target=target,
                unit=Unit.NANOS,
                limit=amount,
                period=Period.parse(limits.period),
                hard=True,
                soft_bp=(),
            )
        )
    for text, unit in ((limits.requests, Unit.REQUESTS), (limits.tokens, Unit.TOKENS)):
        for rate in parse_rates(text, whole=True) if text is not None else ():
            per = rate.text.split("/", 1)[1].strip()
            if rate.amount > ceiling:
                raise ValueError(
                    f"{rate.text!r}: the amount must be at most {limit_bound(unit, ceiling)}"
                )
            made.append(
                Budget(
                    name=f"{name}:{unit.value}/{per}",
                    target=target,
                    unit=unit,
                    limit=int(rate.amount),
                    period=limit_period(rate.period),
                    hard=True,
                    soft_bp=(),
                    kind=Kind.LIMIT,
                )
            )
    return tuple(made)


KEY_CACHE = 4096  # keys whose budgets are remembered (then start over)


class KeyBudgetCache:
    """`spendgate.domain.budgets.PerKey`: each key's budgets, built once per version of its
    limits (a key updated at run time gets new ones on its next request)."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, KeyLimits], tuple[Budget, ...]] = {}

    def __call__(self, key: ApiKey) -> tuple[Budget, ...]:
        if not key.metadata:
            return ()
        limits = KeyLimits.of(key)
        if not limits:
            return ()
        found = self._made.get((key.id, limits))
        if found is None:
            try:
                found = key_budgets(key.id, limits)
            except ValueError:  # checked when stored; a hand-edited row: no budget is safer
                found = ()  # than refusing every request of the key
            if len(self._made) >= KEY_CACHE:
                self._made.clear()
            self._made[(key.id, limits)] = found
        return found

    def seen(self) -> list[Budget]:
        return [budget for budgets in self._made.values() for budget in budgets]
