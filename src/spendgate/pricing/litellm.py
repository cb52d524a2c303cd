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
  ``cache_creation_input_token_cost_above_1hr``, ``output_cost_per_reasoning_token``,
  ``input_cost_per_audio_token`` (audio input: Gemini);
* long-context bands ``<field>_above_<N>k_tokens`` for the fields above: a band applies
  when the request's input is strictly above N thousand tokens; a field a band does not
  restate keeps its base value, as LiteLLM itself charges;
* service tiers: ``<field>_<suffix>`` and ``<field>_above_<N>k_tokens_<suffix>`` for the
  suffixes ``priority``, ``flex``, ``ultrafast`` and ``batches`` (the tier ``batch``).
  A tier is read when the entry gives both its ``input_cost_per_token_<suffix>`` and
  ``output_cost_per_token_<suffix>``; it becomes a rate card of its own
  (`spendgate.domain.pricing.ServiceTier`) with a band for every threshold of the
  standard rates or of its own bands. A field the tier does not state is the standard
  field in proportion, as providers price their tiers: input-side fields (cached input,
  cache writes) times the tier's input over the standard input, reasoning times the tier's
  output over the standard output, each rounded up; a band field it does not state is the
  standard band's field in the same proportion (Priority above 272K is 2x the long-context
  rates when Priority is 2x). Keeping the standard value instead would bill Gemini's
  Priority reasoning tokens, which LiteLLM prices apart, at the standard rate;
* ``search_context_cost_per_query`` (dollars per search, by search context size): the
  dearest size becomes the ``web_search`` fee per call. LiteLLM's number is also what
  OpenAI charges per search for ``web_search_preview`` on some models, and Gemini's is
  charged from the first query although Google bills only past a free monthly allowance
  (``search_free_requests``, not read);
* ``max_input_tokens`` / ``max_output_tokens`` — kept when they are positive integers and
  otherwise ignored: they bound reservations, they do not decide a charge.

Not read: other tiers' suffixes (``_decisions``), regional or FedRAMP uplifts
(``regional_processing_uplift_multiplier_*``), Anthropic's ``provider_specific_entry``
(``fast`` and ``us`` multipliers), cache writes above 12 hours, audio output, image and per-second
prices, and other per-call fees (file search, code execution, Maps grounding): give them
in the catalog or under ``pricing.overrides``.

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
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

from spendgate.domain.pricing import Price, PriceBook, Rates, ServiceTier, Tier
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
        "input_cost_per_audio_token": "audio_input",
    }
)
_FIELD = "(?P<field>" + "|".join(map(re.escape, RATE_FIELDS)) + ")"
_BAND = re.compile(rf"^{_FIELD}_above_(?P<thousands>\d+)k_tokens$")
# LiteLLM suffix → the tier name providers report.
TIER_SUFFIXES: Mapping[str, str] = MappingProxyType(
    {"priority": "priority", "flex": "flex", "ultrafast": "ultrafast", "batches": "batch"}
)
_TIERED = re.compile(
    rf"^{_FIELD}(?:_above_(?P<thousands>\d+)k_tokens)?_(?P<suffix>{'|'.join(TIER_SUFFIXES)})$"
)
SEARCH_FEE_KEY = "search_context_cost_per_query"


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


def _dollars(value: object, source: str, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ConfigError(source, key, f"must be a number, not {type(value).__name__}")
    amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise ConfigError(source, key, f"must be a finite, non-negative number, not {value}")
    return amount


def _cost(value: object, source: str, key: str) -> Nanos:
    """Dollars per token (as the file's decimal text) → nano-dollars per million tokens."""
    return dollars_to_nanos(_dollars(value, source, key) * TOKENS_PER_PRICE_UNIT)


def _fee(value: object, source: str, key: str) -> Nanos:
    """Dollars per call → nano-dollars per call."""
    return dollars_to_nanos(_dollars(value, source, key))


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


def _tiered_fields(
    entry: Mapping[str, object], source: str, name: str
) -> dict[str, dict[int, dict[str, Nanos]]]:
    """suffix → threshold (0: the tier's base rates) → `Rates` field → rate."""
    found: dict[str, dict[int, dict[str, Nanos]]] = {}
    for key, value in entry.items():
        match = _TIERED.match(key)
        if match is None or value is None:
            continue
        threshold = int(match["thousands"] or 0) * 1000
        if match["thousands"] is not None and threshold == 0:
            continue  # "above 0k": no band, as in `_bands`
        fields = found.setdefault(match["suffix"], {}).setdefault(threshold, {})
        fields[RATE_FIELDS[match["field"]]] = _cost(value, source, f"{name}.{key}")
    return found


def _ratio(tier: Nanos, standard: Nanos) -> Fraction:
    return Fraction(tier, standard) if standard else Fraction(1)


def _in_proportion(rates: Rates, input_ratio: Fraction, output_ratio: Fraction) -> Rates:
    """``rates`` with the input-side fields times ``input_ratio`` and the output-side ones
    (output, reasoning) times ``output_ratio``, each rounded up."""
    inputs, outputs = rates.scaled(input_ratio), rates.scaled(output_ratio)
    return dataclasses.replace(inputs, output=outputs.output, reasoning=outputs.reasoning)


def _service_tier(
    base: Rates, bands: tuple[Tier, ...], own: dict[int, dict[str, Nanos]]
) -> ServiceTier:
    """A tier as rates of its own: what LiteLLM states for it, and every field it does not
    state in proportion to the standard one (see the module docstring)."""
    stated = own[0]
    ratios = (_ratio(stated["input"], base.input), _ratio(stated["output"], base.output))
    rates = dataclasses.replace(_in_proportion(base, *ratios), **stated)
    standard = {band.above_input_tokens: band.rates for band in bands}
    tiers = tuple(
        Tier(
            threshold,
            dataclasses.replace(
                rates
                if threshold not in standard
                else _in_proportion(standard[threshold], *ratios),
                **own.get(threshold, {}),
            ),
        )
        for threshold in sorted((set(standard) | set(own)) - {0})
    )
    return ServiceTier(rates=rates, tiers=tiers)


def _service_tiers(
    entry: Mapping[str, object], base: Rates, bands: tuple[Tier, ...], source: str, name: str
) -> dict[str, ServiceTier]:
    tiers: dict[str, ServiceTier] = {}
    for suffix, own in _tiered_fields(entry, source, name).items():
        if {"input", "output"} <= set(own.get(0, {})):
            tiers[TIER_SUFFIXES[suffix]] = _service_tier(base, bands, own)
    return tiers


def _tool_fees(entry: Mapping[str, object], source: str, name: str) -> dict[str, Nanos]:
    value = entry.get(SEARCH_FEE_KEY)
    if value is None:
        return {}
    key = f"{name}.{SEARCH_FEE_KEY}"
    if not isinstance(value, Mapping):
        return {"web_search": _fee(value, source, key)}
    fees = [_fee(fee, source, f"{key}.{size}") for size, fee in value.items() if fee is not None]
    return {"web_search": max(fees)} if fees else {}


def _price(name: str, entry: Mapping[str, object], source: str) -> Price:
    rates = _base_rates(entry, source, name)
    bands = _bands(entry, rates, source, name)
    return Price(
        model=name,
        rates=rates,
        tiers=bands,
        max_output_tokens=_limit(entry.get("max_output_tokens")),
        max_input_tokens=_limit(entry.get("max_input_tokens")),
        source=f"litellm:{source}",
        service_tiers=_service_tiers(entry, rates, bands, source, name),
        tool_fees=_tool_fees(entry, source, name),
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
