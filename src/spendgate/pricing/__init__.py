"""Where prices come from: the shipped catalog, LiteLLM price files and the operator's config.

The arithmetic that uses them (`Price`, `PriceBook`, `cost_of`) is pure and lives in
`spendgate.domain.pricing`; this package only reads files and builds the book.
"""

from spendgate.pricing.catalog import (
    build_price_book,
    load_builtin_catalog,
    parse_catalog,
    price_from_config,
)
from spendgate.pricing.litellm import ImportReport, LiteLLMImport, load_litellm_file, parse_litellm

__all__ = [
    "ImportReport",
    "LiteLLMImport",
    "build_price_book",
    "load_builtin_catalog",
    "load_litellm_file",
    "parse_catalog",
    "parse_litellm",
    "price_from_config",
]
