"""The YAML config: its schema and its strict loader."""

from spendgate.config.loader import load_config, parse_config
from spendgate.config.schema import Config

__all__ = ["Config", "load_config", "parse_config"]
