"""The one module that reads the process environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

CONFIG_ENV = "SPENDGATE_CONFIG"
DEFAULT_CONFIG = "spendgate.yaml"


@dataclass(frozen=True)
class Settings:
    env: Mapping[str, str] = field(repr=False)

    @classmethod
    def from_environment(cls) -> Settings:
        return cls(env=dict(os.environ))

    def config_path(self, explicit: str | None) -> Path:
        """``--config``, else ``$SPENDGATE_CONFIG``, else ``./spendgate.yaml``."""
        return Path(explicit or self.env.get(CONFIG_ENV) or DEFAULT_CONFIG)
