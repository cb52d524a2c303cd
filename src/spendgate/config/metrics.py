"""The ``metrics:`` section: which labels `GET /metrics` may carry beyond the bounded ones,
how many series it keeps, and an optional listener of its own (another host and port, and
a token only for it). See docs/admin-api.md#metrics. Restart-only, as ``server`` is."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"

PersonalLabel = Literal["user", "key"]


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    # Opt-in labels that name whom a request was for (unbounded: one series per user or key
    # seen, up to max_label_values each); never a session.
    labels: list[PersonalLabel] = Field(default_factory=list)
    max_label_values: Annotated[int, Field(ge=1)] = 1000  # later values are counted as "_other"
    max_budget_series: Annotated[int, Field(ge=0)] = 500  # per-budget gauge series at most
    # A listener that serves GET /metrics and nothing else (e.g. on a scrape network).
    port: Annotated[int | None, Field(ge=0, le=65535)] = None  # 0: any free port
    host: str | None = None  # None: the host the gateway listens on
    token_env: Annotated[str | None, Field(pattern=ENV_NAME)] = None  # a token for /metrics only
