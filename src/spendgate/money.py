"""Money is an integer number of nano-dollars (1e-9 USD). No float ever decides a budget.

Prices are quoted per million tokens, also in nano-dollars: $0.15 / 1M tokens is
``150_000_000`` nano-dollars per million. The cost of ``n`` tokens is therefore
``ceil(n * price_per_million / 1_000_000)`` nano-dollars: rounding is always up, so
that a computed charge is never below the real one.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import NewType

Nanos = NewType("Nanos", int)

NANOS_PER_DOLLAR = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000


def nanos(value: int) -> Nanos:
    return Nanos(value)


def dollars_to_nanos(value: str | int | Decimal) -> Nanos:
    """Parse a dollar amount exactly. Floats are refused: they cannot be exact."""
    if isinstance(value, float):  # pragma: no cover - guarded by typing, kept for callers
        raise TypeError("dollar amounts must be str, int or Decimal, not float")
    try:
        amount = Decimal(str(value).strip().lstrip("$"))
    except InvalidOperation as exc:
        raise ValueError(f"not a dollar amount: {value!r}") from exc
    if not amount.is_finite():
        raise ValueError(f"not a dollar amount: {value!r}")
    scaled = amount * NANOS_PER_DOLLAR
    return Nanos(int(scaled.to_integral_value(rounding=ROUND_CEILING)))


def float_dollars_to_nanos(value: float) -> Nanos:
    """For foreign catalogs that store floats (LiteLLM): go through the shortest repr."""
    return dollars_to_nanos(Decimal(repr(value)))


def token_cost(tokens: int, price_per_million: Nanos) -> Nanos:
    """Cost of ``tokens`` at a per-million price, rounded up to the next nano-dollar."""
    if tokens <= 0 or price_per_million == 0:
        return Nanos(0)
    return Nanos(-(-tokens * price_per_million // TOKENS_PER_PRICE_UNIT))


def format_dollars(amount: int, places: int = 6) -> str:
    """Render nano-dollars as a dollar string, e.g. ``$0.001234``."""
    sign = "-" if amount < 0 else ""
    value = Decimal(abs(amount)) / NANOS_PER_DOLLAR
    return f"{sign}${value:.{places}f}"


def nanos_to_decimal(amount: int) -> Decimal:
    return Decimal(amount) / NANOS_PER_DOLLAR


def dollars_text(amount: int) -> str:
    """Nano-dollars as exact dollars with nine places (``1234`` -> ``0.000001234``), as
    ``f"{nanos_to_decimal(amount):.9f}"`` writes them, in integer arithmetic: it is on
    every answer (the cost header), and `Decimal` formatting costs microseconds."""
    whole, part = divmod(abs(amount), NANOS_PER_DOLLAR)
    return f"{'-' if amount < 0 else ''}{whole}.{part:09d}"
