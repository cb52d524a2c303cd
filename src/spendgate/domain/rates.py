"""The rate-limit grammar: ``"600/minute; 20000/day"`` parsed once into value objects.

A rate is ``<amount>/<period>``; periods are ``second``, ``minute``, ``hour``, ``day``
(also ``s``, ``m``, ``h``, ``d``, plural or not), optionally with a count: ``100/5m``.
Several rates are separated by ``;``. Dollar rates take decimal amounts (``"2.50/hour"``);
request and token rates take whole numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal, InvalidOperation

from spendgate.domain.periods import MAX_ROLLING_DAYS

_UNITS = {
    "second": timedelta(seconds=1),
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
_SECOND = timedelta(seconds=1)
_ALIASES = {"s": "second", "sec": "second", "m": "minute", "min": "minute", "h": "hour", "d": "day"}
_RATE = re.compile(r"^\s*([0-9][0-9_,]*(?:\.[0-9]+)?)\s*/\s*([0-9]*)\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    amount: Decimal
    period: timedelta
    text: str

    def __str__(self) -> str:
        return self.text


def parse_rates(text: str, *, whole: bool) -> tuple[Rate, ...]:
    """Parse ``"600/minute; 20000/day"``; ValueError says which part is wrong and why."""
    rates = []
    for part in text.split(";"):
        if not part.strip():
            continue
        rates.append(_parse_one(part.strip(), whole=whole))
    if not rates:
        raise ValueError(f"no rate in {text!r}: write e.g. '600/minute; 20000/day'")
    periods = [rate.period for rate in rates]
    if len(set(periods)) != len(periods):
        raise ValueError(f"{text!r} gives the same period twice")
    return tuple(rates)


def _parse_one(part: str, *, whole: bool) -> Rate:
    match = _RATE.match(part.lower())
    if match is None:
        raise ValueError(f"{part!r} is not a rate: write <amount>/<period>, e.g. '600/minute'")
    raw_amount, count, unit = match.groups()
    if len(unit) > 3 and unit.endswith("s"):  # plurals of words only: "ms" is not minutes
        unit = unit[:-1]
    unit = _ALIASES.get(unit, unit)
    if unit not in _UNITS:
        raise ValueError(f"{part!r}: unknown period {unit!r} (second, minute, hour or day)")
    try:
        amount = Decimal(raw_amount.replace("_", "").replace(",", ""))
    except InvalidOperation:
        raise ValueError(f"{part!r}: {raw_amount!r} is not a number") from None
    if amount <= 0:
        raise ValueError(f"{part!r}: the amount must be positive")
    if whole and amount != amount.to_integral_value():
        raise ValueError(f"{part!r}: requests and tokens are counted in whole numbers")
    multiple = int(count) if count else 1
    if multiple <= 0:
        raise ValueError(f"{part!r}: the period count must be positive")
    if multiple * (_UNITS[unit] // _SECOND) > MAX_ROLLING_DAYS * 86_400:
        raise ValueError(
            f"{part!r}: the period is at most {MAX_ROLLING_DAYS} days (10 years), as a "
            "rolling window's"
        )
    return Rate(amount=amount, period=_UNITS[unit] * multiple, text=part)
