"""The built-in price catalog, and the one function that layers every price source.

Price layering (`build_price_book`), later layers replace earlier ones model by model:

1. the built-in catalog (`catalog.yaml`, dated by its ``as_of``), unless
   ``pricing.builtin_catalog: false``;
2. the LiteLLM price files of ``pricing.litellm_files``, in the order listed (relative
   paths are read from the config file's folder). The operator chose to import them, so
   they are taken as fresher than the shipped snapshot. Names LiteLLM only implies by a
   provider prefix (``anthropic/claude-...`` → ``claude-...``) never replace a name an
   earlier layer prices explicitly;
3. ``pricing.overrides`` — the operator's corrections, keyed by model name;
4. ``models.<name>.price`` — a gateway model's own price, which beats everything.

A layer replaces a model's rates and long-context tiers whole, but its service tiers and
tool fees are layered key by key: a tier or tool the layer does not name keeps its price
from the layer below (an override of a model's rates keeps the catalog's ``priority``
multiplier and web search fee); a tier set to ``null`` is removed. A free price has
neither. The limits (``max_input_tokens``, ``max_output_tokens``) belong to the model, not
to its price: a layer that does not state one keeps the layer below's, so a negotiated
price never loses the catalog's maximum output (which bounds every reservation).

A gateway model without a price of its own is looked up by its gateway name first and, if
that is absent, by the upstream name of its first deployment (``upstream_model``), and is
then filed under its gateway name. A model that no layer prices stays out of the book:
unpriced means refused, never free.

Every price entry, in the catalog or in the config, is validated by the same pydantic
model (`spendgate.config.schema.PriceConfig`), so there is one definition of what a price
may contain. Catalog entries may also name a ``family`` (``openai``, ``anthropic``, ...)
whose service tiers and tool fees they start from, declared once under ``families``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, model_validator

from spendgate.config.patterns import NAME
from spendgate.config.schema import (
    Config,
    PriceConfig,
    RatesConfig,
    ServiceTierConfig,
    ServiceTiersConfig,
    Strict,
    TierConfig,
    ToolFeesConfig,
)
from spendgate.domain.pricing import Price, PriceBook, Rates, ServiceTier, Tier, free_price
from spendgate.errors import ConfigError
from spendgate.money import Nanos, dollars_to_nanos
from spendgate.pricing.litellm import load_litellm_file

CATALOG_RESOURCE = "catalog.yaml"
CATALOG_SOURCE = "spendgate/pricing/catalog.yaml"


DATE = r"^\d{4}-\d{2}-\d{2}$"


class FamilyConfig(Strict):
    """What the models of one provider family share: their service tiers and tool fees."""

    as_of: Annotated[str | None, Field(pattern=DATE)] = None
    service_tiers: ServiceTiersConfig = Field(default_factory=ServiceTiersConfig)
    tool_fees: ToolFeesConfig = Field(default_factory=ToolFeesConfig)


class CatalogEntry(PriceConfig):
    """A catalog entry: a config ``price:`` block, the other names of the same model, and
    the family whose service tiers and tool fees it starts from."""

    aliases: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list)
    family: Annotated[str | None, Field(pattern=NAME)] = None
    as_of: Annotated[str | None, Field(pattern=DATE)] = None  # when it was last checked


class CatalogFile(Strict):
    as_of: Annotated[str, Field(pattern=DATE)]
    sources: list[str] = Field(default_factory=list)
    families: dict[Annotated[str, Field(pattern=NAME)], FamilyConfig] = Field(default_factory=dict)
    models: dict[Annotated[str, Field(pattern=NAME)], CatalogEntry]

    @model_validator(mode="after")
    def _unique_names(self) -> CatalogFile:
        owner: dict[str, str] = {name: name for name in self.models}
        for name, entry in self.models.items():
            for alias in entry.aliases:
                if alias in owner:
                    raise ValueError(
                        f"models.{name}.aliases: {alias!r} is already a name of {owner[alias]!r}"
                    )
                owner[alias] = name
        return self


# --------------------------------------------------------------------- config → Price


def _nanos(value: Decimal | None, field: str) -> Nanos | None:
    if value is None:
        return None
    if value < 0:
        raise ValueError(f"{field} must not be negative")
    return dollars_to_nanos(value)


def _required(value: Decimal | None, field: str) -> Nanos:
    nanos = _nanos(value, field)
    if nanos is None:
        raise ValueError(f"{field} is required (dollars per 1M tokens)")
    return nanos


def _rates(cfg: PriceConfig | RatesConfig | ServiceTierConfig, prefix: str = "") -> Rates:
    return Rates(
        input=_required(cfg.input, f"{prefix}input"),
        output=_required(cfg.output, f"{prefix}output"),
        cached_input=_nanos(cfg.cached_input, f"{prefix}cached_input"),
        cache_write=_nanos(cfg.cache_write, f"{prefix}cache_write"),
        cache_write_1h=_nanos(cfg.cache_write_1h, f"{prefix}cache_write_1h"),
        reasoning=_nanos(cfg.reasoning, f"{prefix}reasoning"),
        audio_input=_nanos(cfg.audio_input, f"{prefix}audio_input"),
    )


def _tiers(tiers: list[TierConfig], prefix: str) -> tuple[Tier, ...]:
    return tuple(
        Tier(tier.above_input_tokens, _rates(tier.rates, f"{prefix}tiers[{index}].rates."))
        for index, tier in enumerate(tiers)
    )


def _service_tier(cfg: ServiceTierConfig, prefix: str) -> ServiceTier:
    if cfg.multiplier is not None:
        return ServiceTier(multiplier=Fraction(cfg.multiplier))  # exact: 1.8 is 9/5
    return ServiceTier(rates=_rates(cfg, prefix), tiers=_tiers(cfg.tiers, prefix))


def _layered_service_tiers(
    below: Mapping[str, ServiceTier], cfg: ServiceTiersConfig
) -> dict[str, ServiceTier]:
    """``below``'s service tiers with those ``cfg`` names replaced, and its ``null`` ones
    removed."""
    tiers = dict(below)
    for name, tier in sorted(cfg.stated().items()):
        if tier is None:
            tiers.pop(name, None)
        else:
            tiers[name] = _service_tier(tier, f"service_tiers.{name}.")
    return tiers


def _layered_tool_fees(below: Mapping[str, Nanos], cfg: ToolFeesConfig) -> dict[str, Nanos]:
    """``below``'s tool fees (nano-dollars per call) with those ``cfg`` names replaced."""
    fees = dict(below)
    for name, dollars in sorted(cfg.stated().items()):
        fees[name] = _required(dollars, f"tool_fees.{name}")
    return fees


def price_from_config(
    model: str, cfg: PriceConfig, source: str, below: Price | None = None
) -> Price:
    """Turn a validated price block (Decimal dollars per 1M tokens) into integer nano-dollars.

    ``below`` is the price this block replaces, if any: its service tiers, tool fees,
    limits and audio input rate are kept where the block names none (see the module
    docstring).

    Raises `ValueError` naming the field for a negative rate: the schema's `PriceConfig`
    does not refuse those itself, and a negative price would credit budgets.
    """
    if cfg.free:
        price = free_price(model, source=source)
    else:
        price = Price(
            model=model,
            rates=_kept_audio(_rates(cfg), below),
            tiers=_tiers(cfg.tiers, ""),
            source=source,
            service_tiers=_layered_service_tiers(
                below.service_tiers if below else {}, cfg.service_tiers
            ),
            tool_fees=_layered_tool_fees(below.tool_fees if below else {}, cfg.tool_fees),
        )
    return dataclasses.replace(
        price,
        max_output_tokens=cfg.max_output_tokens or (below.max_output_tokens if below else None),
        max_input_tokens=cfg.max_input_tokens or (below.max_input_tokens if below else None),
    )


def _kept_audio(rates: Rates, below: Price | None) -> Rates:
    """``rates``, with the audio input rate of ``below`` where they state none."""
    if rates.audio_input is not None or below is None or below.rates.audio_input is None:
        return rates
    return dataclasses.replace(rates, audio_input=below.rates.audio_input)


def _inheriting(book: PriceBook, prices: Mapping[str, Price]) -> dict[str, Price]:
    """``prices`` about to replace entries of ``book``, each keeping the service tiers, tool
    fees, limits and audio input rate of the entry it replaces that it does not name
    itself."""
    layered: dict[str, Price] = {}
    for name, price in prices.items():
        below = book.get(name)
        if below is None:
            layered[name] = price
            continue
        price = dataclasses.replace(
            price,
            max_output_tokens=price.max_output_tokens or below.max_output_tokens,
            max_input_tokens=price.max_input_tokens or below.max_input_tokens,
        )
        if not price.free:
            price = dataclasses.replace(
                price,
                rates=_kept_audio(price.rates, below),
                service_tiers={**below.service_tiers, **price.service_tiers},
                tool_fees={**below.tool_fees, **price.tool_fees},
            )
        layered[name] = price
    return layered


# --------------------------------------------------------------------- the catalog file


def _key_path(location: tuple[int | str, ...]) -> str:
    parts = [f"[{p}]" if isinstance(p, int) else f".{p}" for p in location]
    return "".join(parts).lstrip(".")


def _validation_error(exc: ValidationError, source: str) -> ConfigError:
    first = exc.errors()[0]
    location = tuple(p for p in first["loc"] if not str(p).startswith("function-"))
    message = str(first["msg"]).removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    return ConfigError(source, _key_path(location), message)


def _families(catalog: CatalogFile, source: str) -> dict[str, Price]:
    """Each family as a price that holds only its service tiers and tool fees."""
    families: dict[str, Price] = {}
    for name, family in catalog.families.items():
        try:
            families[name] = Price(
                model=name,
                rates=Rates(Nanos(0), Nanos(0)),
                service_tiers=_layered_service_tiers({}, family.service_tiers),
                tool_fees=_layered_tool_fees({}, family.tool_fees),
            )
        except ValueError as exc:
            raise ConfigError(source, f"families.{name}", str(exc)) from None
    return families


def _family_of(
    entry: CatalogEntry, families: Mapping[str, Price], key: str, source: str
) -> Price | None:
    if entry.family is None:
        return None
    family = families.get(entry.family)
    if family is None:
        known = ", ".join(sorted(families)) or "none"
        raise ConfigError(source, key, f"unknown family {entry.family!r} (declared: {known})")
    return family


def parse_catalog(data: object, source: str) -> PriceBook:
    """Validate a catalog document (the parsed YAML) strictly and build its price book.

    Every problem raises `ConfigError` naming ``source`` and the key path, e.g.
    ``models.gpt-4o.input``.
    """
    try:
        catalog = CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, source) from None
    families = _families(catalog, source)
    prices: dict[str, Price] = {}
    for name, entry in catalog.models.items():
        family = _family_of(entry, families, f"models.{name}.family", source)
        try:
            price = price_from_config(name, entry, "catalog", family)
        except ValueError as exc:
            raise ConfigError(source, f"models.{name}", str(exc)) from None
        prices[name] = price
        for alias in entry.aliases:
            prices[alias] = dataclasses.replace(price, model=alias)
    return PriceBook(prices=MappingProxyType(prices), as_of=catalog.as_of)


@functools.cache
def load_builtin_catalog() -> PriceBook:
    """The catalog shipped with spendgate, read once from the package data."""
    text = resources.files(__package__).joinpath(CATALOG_RESOURCE).read_text(encoding="utf-8")
    # libyaml's safe loader where PyYAML has it: the same data, ~9x less CPU (CLI start)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    return parse_catalog(yaml.load(text, Loader=loader), CATALOG_SOURCE)  # noqa: S506


# --------------------------------------------------------------------- layering


def _config_price(
    model: str, cfg: PriceConfig, key: str, label: str, source: str, below: Price | None
) -> Price:
    try:
        return price_from_config(model, cfg, label, below)
    except ValueError as exc:
        raise ConfigError(source, key, str(exc)) from None


def _resolve(path: str, base_dir: Path | None) -> Path:
    resolved = Path(path).expanduser()
    if base_dir is not None and not resolved.is_absolute():
        resolved = base_dir / resolved
    return resolved


def _gateway_names(config: Config, book: PriceBook, source: str) -> dict[str, Price]:
    """Prices filed under each gateway model's own name (see the module docstring)."""
    prices: dict[str, Price] = {}
    for name, spec in config.models.items():
        upstream = spec.resolved_deployments(name)[0].model or name
        found = book.get(name) or book.get(upstream)
        if spec.price is not None:
            key = f"models.{name}.price"
            prices[name] = _config_price(name, spec.price, key, "model", source, found)
        elif name not in book and found is not None:
            prices[name] = dataclasses.replace(found, model=name)
    return prices


def build_price_book(
    config: Config, *, env_base_dir: Path | None = None, source: str = "<config>"
) -> PriceBook:
    """Layer every price source into one book, as described in the module docstring.

    ``env_base_dir`` is the config file's folder, against which relative
    ``pricing.litellm_files`` are read; ``source`` names the config file in errors.
    """
    book = load_builtin_catalog() if config.pricing.builtin_catalog else PriceBook()
    for path in config.pricing.litellm_files:
        imported = load_litellm_file(_resolve(path, env_base_dir))
        book = book.merged(_inheriting(book, imported.prices))
        book = book.merged({k: v for k, v in imported.aliases.items() if k not in book})
    overrides = {
        model: _config_price(
            model, cfg, f"pricing.overrides.{model}", "override", source, book.get(model)
        )
        for model, cfg in config.pricing.overrides.items()
    }
    book = book.merged(overrides)
    return book.merged(_gateway_names(config, book, source))
