"""Import LiteLLM's ``model_prices_and_context_window.json``.

LiteLLM keeps the most complete public price list, as dollars per TOKEN stored as JSON
floats (``"input_cost_per_token": 1.5e-07``). spendgate reads those numbers as the
decimal text the file holds (``json`` with ``parse_float=Decimal``), never as binary
floats, and scales them to dollars per million before rounding up to integer nano-dollars,
so ``1.5e-07`` becomes exactly ``150_000_000`` nano-dollars per million.

What is read (per entry; all optional unless said):

* ``input_cost_per_token`` and ``output_cost_per_token`` — required: an entry without both
  (image, audio, rerank or search pricing) is skipped and counted in the report;
* ``cache_read_input_token_cost``, ``cache_creation_input_token_cost``,
  ``cache_creation_input_token_cost_above_1hr``, ``output_cost_per_reasoning_token``;
* long-context bands ``<field>_above_<N>k_tokens`` for the fields above: a band applies
  when the request's input is strictly above N thousand tokens; a field a band does not
  restate keeps its base value, as LiteLLM itself charges. Service-tier variants
  (``..._priority``, ``..._flex``) are not read;
* ``max_input_tokens`` / ``max_output_tokens`` — kept when they are positive integers and
  otherwise ignored: they bound reservations, they do not decide a charge.

Keys are model names as LiteLLM writes them, often with a provider prefix
(``anthropic/claude-...``). The full key is kept, and the name without its first
``prefix/`` is added as an *alias* when no entry of the file has that name itself. When
several prefixed entries imply the same alias, the dearest one wins: an ambiguous price
must not undercharge.

Cost values of the wrong type, negative or not finite raise `ConfigError` naming the file
and the key, as does a file that is not a JSON object.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType

from spendgate.domain.pricing import Price, PriceBook, Rates, Tier
from spendgate.errors import ConfigError
from spendgate.money import TOKENS_PER_PRICE_UNIT, Nanos, dollars_to_nanos

SAMPLE_SPEC_KEY = "sample_spec"

# LiteLLM field → `Rates` field.
RATE_FIELDS: Mapping[str, str] = MappingProxyType(
    {
        "input_cost_per_token": "input",
        "output_cost_per_token": "output",
        "cache_read_input_token_cost": "cached_input",
        "cache_creation_input_token_cost": "cache_write",
        "cache_creation_input_token_cost_above_1hr": "cache_write_1h",
        "output_cost_per_reasoning_token": "reasoning",
    }
)
_BAND = re.compile(
    r"^(?P<field>" + "|".join(map(re.escape, RATE_FIELDS)) + r")_above_(?P<thousands>\d+)k_tokens$"
)


@dataclass(frozen=True, slots=True)
class ImportReport:
    source: str
    entries: int = 0  # model entries in the file, ``sample_spec`` excluded
    imported: int = 0  # entries that became a price under their full key
    skipped_unpriced: int = 0  # entries without both an input and an output cost
    aliases: int = 0  # names added by dropping a provider prefix


@dataclass(frozen=True, slots=True)
class LiteLLMImport:
    prices: Mapping[str, Price]  # by the file's own keys
    aliases: Mapping[str, Price]  # by names implied by dropping a provider prefix
    report: ImportReport

    @property
    def book(self) -> PriceBook:
        return PriceBook(prices={**self.aliases, **self.prices})


# --------------------------------------------------------------------- one entry


def _cost(value: object, source: str, key: str) -> Nanos:
    """Dollars per token (as the file's decimal text) → nano-dollars per million tokens."""
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigError(source, key, f"must be a number, not {type(value).__name__}")
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ConfigError(source, key, f"must be a finite, non-negative number, not {value}")
    return dollars_to_nanos(amount * TOKENS_PER_PRICE_UNIT)


def _limit(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        return None
    try:
        whole = int(value)
    except (ValueError, OverflowError):  # NaN, infinity
        return None
    return whole if whole > 0 and whole == value else None


def _base_rates(entry: Mapping[str, object], source: str, name: str) -> Rates:
    values = {
        field: _cost(entry[litellm_field], source, f"{name}.{litellm_field}")
        for litellm_field, field in RATE_FIELDS.items()
        if entry.get(litellm_field) is not None
    }
    return Rates(**values)


def _bands(entry: Mapping[str, object], base: Rates, source: str, name: str) -> tuple[Tier, ...]:
    changes: dict[int, dict[str, Nanos]] = {}
    for key, value in entry.items():
        match = _BAND.match(key)
        if match is None or value is None or int(match["thousands"]) == 0:
            continue
        threshold = int(match["thousands"]) * 1000
        field = RATE_FIELDS[match["field"]]
        changes.setdefault(threshold, {})[field] = _cost(value, source, f"{name}.{key}")
    return tuple(
        Tier(above_input_tokens=threshold, rates=dataclasses.replace(base, **fields))
        for threshold, fields in sorted(changes.items())
    )


def _price(name: str, entry: Mapping[str, object], source: str) -> Price:
    rates = _base_rates(entry, source, name)
    return Price(
        model=name,
        rates=rates,
        tiers=_bands(entry, rates, source, name),
        max_output_tokens=_limit(entry.get("max_output_tokens")),
        max_input_tokens=_limit(entry.get("max_input_tokens")),
        source=f"litellm:{source}",
    )


def _is_priced(entry: Mapping[str, object]) -> bool:
    return (
        entry.get("input_cost_per_token") is not None
        and entry.get("output_cost_per_token") is not None
    )


# --------------------------------------------------------------------- the whole file


def _dearer(candidate: Price, current: Price | None) -> bool:
    if current is None:
        return True
    rank = (candidate.rates.output, candidate.rates.input)
    return rank > (current.rates.output, current.rates.input)


def _aliases(prices: Mapping[str, Price]) -> dict[str, Price]:
    aliases: dict[str, Price] = {}
    for key, price in prices.items():
        _, slash, short = key.partition("/")
        if not slash or not short or short in prices:
            continue
        if _dearer(price, aliases.get(short)):
            aliases[short] = dataclasses.replace(price, model=short)
    return aliases


def parse_litellm(data: object, source: str) -> LiteLLMImport:
    """Build prices from a parsed LiteLLM document; ``source`` names it in errors."""
    if not isinstance(data, Mapping):
        raise ConfigError(source, "", "the top level must be a JSON object of model names")
    prices: dict[str, Price] = {}
    entries = skipped = 0
    for name, entry in data.items():
        if name == SAMPLE_SPEC_KEY:
            continue
        entries += 1
        if not isinstance(entry, Mapping):
            raise ConfigError(source, str(name), f"must be an object, not {type(entry).__name__}")
        if not _is_priced(entry):
            skipped += 1
            continue
        prices[str(name)] = _price(str(name), entry, source)
    aliases = _aliases(prices)
    report = ImportReport(source, entries, len(prices), skipped, len(aliases))
    return LiteLLMImport(MappingProxyType(prices), MappingProxyType(aliases), report)


def load_litellm_file(path: str | Path) -> LiteLLMImport:
    """Read and import one LiteLLM price file."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc}") from None
    try:
        data = json.loads(text, parse_float=Decimal)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            source, "", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
        ) from None
    return parse_litellm(data, source)
