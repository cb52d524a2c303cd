"""The GenAI names chosen by ``$OTEL_SEMCONV_STABILITY_OPT_IN``, the OTLP headers read from
the environment, and a ledger row's span attributes (pure functions of `events.otel`)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendgate.config import load_config
from spendgate.domain.ledger import LedgerRow
from spendgate.errors import ConfigError
from spendgate.events.otel import Naming, naming, parse_headers, provider_name, row_attributes


@pytest.mark.parametrize(
    ("opt_in", "expected"),
    [
        (None, Naming.EARLIER),
        ("", Naming.EARLIER),
        ("http", Naming.EARLIER),
        ("gen_ai_latest_experimental", Naming.LATEST),
        ("http/dup, gen_ai_latest_experimental", Naming.LATEST),
        ("gen_ai_latest_experimental/dup", Naming.BOTH),
    ],
)
def test_the_opt_in_chooses_the_names(opt_in: str | None, expected: Naming) -> None:
    assert naming(opt_in) is expected


def test_headers_are_read_as_otel_exporter_otlp_headers() -> None:
    assert parse_headers("Authorization=Bearer%20abc, x-team = ml,broken,=x") == {
        "authorization": "Bearer abc",
        "x-team": "ml",
    }
    assert parse_headers(None) == {}


def test_provider_names_follow_the_conventions() -> None:
    assert provider_name("openai", "oai-eu") == "openai"
    assert provider_name("gemini", "g") == "gcp.gemini"
    assert provider_name("openai-compatible", "vllm-local") == "vllm-local"
    assert provider_name(None, "gone") == "gone"


def row(**changes: object) -> LedgerRow:
    fields: dict[str, object] = {
        "request_id": "req_1",
        "ts": datetime(2026, 12, 7, tzinfo=UTC),
        "surface": "anthropic.messages",
        "key_id": "k_1",
        "user": None,
        "service": "bot",
        "team": "ml",
        "org": None,
        "tags": (),
        "requested_model": "claude-haiku-4-5",
        "served_model": "claude-haiku-4-5-20251001",
        "provider": "anthropic",
        "input_tokens": 120,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 45,
        "reasoning_tokens": 0,
        "cost_nanos": 345_000,
        "status": 200,
        "latency_ms": 12.5,
        "ttfb_ms": None,
        "streamed": False,
        "client_disconnected": False,
        "usage_estimated": False,
        "output_ceiling": 50,
    }
    fields.update(changes)
    return LedgerRow(**fields)  # type: ignore[arg-type]


def test_row_attributes_in_each_naming() -> None:
    latest = row_attributes(row(), "anthropic", Naming.LATEST)
    assert latest["gen_ai.provider.name"] == "anthropic"
    assert (latest["gen_ai.usage.input_tokens"], latest["gen_ai.usage.output_tokens"]) == (120, 45)
    assert "gen_ai.system" not in latest
    assert "gen_ai.usage.prompt_tokens" not in latest
    earlier = row_attributes(row(), "anthropic", Naming.EARLIER)
    assert earlier["gen_ai.system"] == "anthropic"
    assert (earlier["gen_ai.usage.prompt_tokens"], earlier["gen_ai.usage.completion_tokens"]) == (
        120,
        45,
    )
    assert "gen_ai.provider.name" not in earlier
    both = row_attributes(row(), "anthropic", Naming.BOTH)
    assert {"gen_ai.system", "gen_ai.provider.name", "gen_ai.usage.input_tokens"} <= set(both)
    for attributes in (latest, earlier, both):
        assert attributes["gen_ai.operation.name"] == "chat"
        assert attributes["gen_ai.request.max_tokens"] == 50
        assert attributes["gen_ai.usage.cost"] == 0.000345
        assert attributes["spendgate.cost_nanos"] == 345_000
        assert attributes["spendgate.team"] == "ml"
        assert "spendgate.user" not in attributes  # None values are left out


def test_a_refusal_names_what_refused_and_what_it_would_have_cost() -> None:
    refused = row_attributes(
        row(blocked_by="tiny", would_cost_nanos=9_000, status=429, cost_nanos=0),
        "anthropic",
        Naming.LATEST,
    )
    assert refused["spendgate.blocked_by"] == "tiny"
    assert refused["spendgate.would_cost_nanos"] == 9_000
    assert refused["gen_ai.usage.cost"] == 0


def test_a_telemetry_endpoint_must_be_an_http_url(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    path.write_text("telemetry:\n  otlp:\n    endpoint: grpc://collector:4317\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{path}: telemetry.otlp.endpoint: must be an http:// or https:// URL (OTLP over HTTP)"
    )
    path.write_text("telemetry:\n  otlp:\n    endpoint: http://collector:4318/\n    port: 1\n")
    with pytest.raises(ConfigError, match=r"telemetry\.otlp\.port"):
        load_config(path)
    path.write_text("telemetry:\n  otlp:\n    endpoint: http://collector:4318/\n")
    otlp = load_config(path).telemetry.otlp
    assert otlp is not None
    assert otlp.endpoint == "http://collector:4318"
