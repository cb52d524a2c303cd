"""``telemetry:``: OpenTelemetry export (docs/observability.md). A module of its own beside
`spendgate.config.schema`, which `Config` takes the section from."""

from __future__ import annotations

import importlib.util
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class OtlpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    # The collector's OTLP/HTTP base URL: traces go to <endpoint>/v1/traces, metrics to
    # <endpoint>/v1/metrics (protobuf).
    endpoint: str
    # An environment variable holding the export's headers as ``key=value,key=value``
    # (an API key for a hosted collector: never in the config file).
    headers_env: Annotated[str, Field(pattern=ENV_NAME)] = "OTEL_EXPORTER_OTLP_HEADERS"
    service_name: Annotated[str, Field(min_length=1)] = "spendgate"
    traces: bool = True
    metrics: bool = True
    export_interval_s: Annotated[float, Field(gt=0)] = 60.0  # metrics; spans go in batches
    timeout_s: Annotated[float, Field(gt=0)] = 10.0

    @field_validator("endpoint")
    @classmethod
    def _http(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP)")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _installed(self) -> OtlpConfig:
        for module in ("opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http"):
            if importlib.util.find_spec(module) is None:
                raise ValueError(
                    f"needs the OpenTelemetry packages ({module} is not installed): "
                    "pip install 'spendgate[otel]'"
                )
        return self


class TelemetryConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    otlp: OtlpConfig | None = None  # None: no OpenTelemetry export
