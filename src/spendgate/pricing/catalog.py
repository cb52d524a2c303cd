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

A gateway model without a price of its own is looked up by its gateway name first and, if
that is absent, by the upstream name of its first deployment (``upstream_model``), and is
then filed under its gateway name. A model that no layer prices stays out of the book:
unpriced means refused, never free.

Every price entry, in the catalog or in the config, is validated by the same pydantic
model (`spendgate.config.schema.PriceConfig`), so there is one definition of what a price
may contain.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from decimal import Decimal
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated

import yaml
from pydantic import Field, ValidationError, model_validator

from spendgate.config.schema import NAME, Config, PriceConfig, RatesConfig, Strict
from spendgate.domain.pricing import Price, PriceBook, Rates, Tier, free_price
from spendgate.errors import ConfigError
from spendgate.money import Nanos, dollars_to_nanos
from spendgate.pricing.litellm import load_litellm_file

CATALOG_RESOURCE = "catalog.yaml"
CATALOG_SOURCE = "spendgate/pricing/catalog.yaml"


class CatalogEntry(PriceConfig):
    """A catalog entry: a config ``price:`` block plus the other names of the same model."""

    aliases: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list)


class CatalogFile(Strict):
    as_of: Annotated[str, Field(pattern=r"^\d{4}-\d{2}-\d{2}$")]
    sources: list[str] = Field(default_factory=list)
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


def _rates(cfg: PriceConfig | RatesConfig, prefix: str = "") -> Rates:
    return Rates(
        input=_required(cfg.input, f"{prefix}input"),
        output=_required(cfg.output, f"{prefix}output"),
        cached_input=_nanos(cfg.cached_input, f"{prefix}cached_input"),
        cache_write=_nanos(cfg.cache_write, f"{prefix}cache_write"),
        cache_write_1h=_nanos(cfg.cache_write_1h, f"{prefix}cache_write_1h"),
        reasoning=_nanos(cfg.reasoning, f"{prefix}reasoning"),
    )


def price_from_config(model: str, cfg: PriceConfig, source: str) -> Price:
    """Turn a validated price block (Decimal dollars per 1M tokens) into integer nano-dollars.

    Raises `ValueError` naming the field for a negative rate: the schema's `PriceConfig`
    does not refuse those itself, and a negative price would credit budgets.
    """
    if cfg.free:
        price = free_price(model, source=source)
    else:
        tiers = tuple(
            Tier(tier.above_input_tokens, _rates(tier.rates, f"tiers[{index}].rates."))
            for index, tier in enumerate(cfg.tiers)
        )
        price = Price(model=model, rates=_rates(cfg), tiers=tiers, source=source)
    return dataclasses.replace(
        price, max_output_tokens=cfg.max_output_tokens, max_input_tokens=cfg.max_input_tokens
    )


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


def parse_catalog(data: object, source: str) -> PriceBook:
    """Validate a catalog document (the parsed YAML) strictly and build its price book.

    Every problem raises `ConfigError` naming ``source`` and the key path, e.g.
    ``models.gpt-4o.input``.
    """
    try:
        catalog = CatalogFile.model_validate(data)
    except ValidationError as exc:
        raise _validation_error(exc, source) from None
    prices: dict[str, Price] = {}
    for name, entry in catalog.models.items():
        try:
            price = price_from_config(name, entry, "catalog")
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
    return parse_catalog(yaml.safe_load(text), CATALOG_SOURCE)


# --------------------------------------------------------------------- layering


def _config_prices(
    entries: Mapping[str, PriceConfig], key: str, label: str, source: str
) -> dict[str, Price]:
    prices: dict[str, Price] = {}
    for model, cfg in entries.items():
        try:
            prices[model] = price_from_config(model, cfg, label)
        except ValueError as exc:
            raise ConfigError(source, key.format(model=model), str(exc)) from None
    return prices


def _resolve(path: str, base_dir: Path | None) -> Path:
    resolved = Path(path).expanduser()
    if base_dir is not None and not resolved.is_absolute():
        resolved = base_dir / resolved
    return resolved


def _gateway_names(config: Config, book: PriceBook, source: str) -> dict[str, Price]:
    """Prices filed under each gateway model's own name (see the module docstring)."""
    own = {name: spec.price for name, spec in config.models.items() if spec.price is not None}
    prices = _config_prices(own, "models.{model}.price", "model", source)
    for name, spec in config.models.items():
        if name in prices or name in book:
            continue
        upstream = spec.resolved_deployments(name)[0].model or name
        found = book.get(upstream)
        if found is not None:
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
        book = book.merged(imported.prices)
        book = book.merged({k: v for k, v in imported.aliases.items() if k not in book})
    overrides = _config_prices(
        config.pricing.overrides, "pricing.overrides.{model}", "override", source
    )
    book = book.merged(overrides)
    return book.merged(_gateway_names(config, book, source))
