"""OpenTelemetry export: one span per request attempt with the GenAI attributes, and the
GenAI client metrics, equal to the ledger's numbers.

Twice: in process with the OTel SDK's in-memory exporter and reader subscribed to a real
gateway's events; and end to end, a real ``spendgate serve`` exporting over OTLP/HTTP to a
receiver on loopback (an aiohttp server decoding the protobuf with opentelemetry-proto),
with the headers taken from the environment and the names chosen by
``$OTEL_SEMCONV_STABILITY_OPT_IN``. The export is driven by counts: the gateway exports
what is left when it stops (SIGTERM), nothing waits for an export interval.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from e2e.process import GatewayProcess, create_key_direct, gateway_env, write_config
from e2e.workers_world import read_rows
from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.events.otel import Naming, Telemetry
from spendgate.simulator.thread import SimulatorThread

PROMPT = [{"role": "user", "content": "Say something short."}]


def budgets(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {
            "name": "tiny",
            "scope": "team",
            "match": "web",
            "limit_usd": "0.00001",
            "period": "daily",
        },
        {"name": "ml", "scope": "team", "match": "ml", "limit_usd": "5", "period": "daily"},
    ]


def workload(base_url: str, ml: str, web_key: str) -> None:
    """Served chat (plain and streamed), served Anthropic messages, one refusal."""
    import anthropic
    import openai

    with openai.OpenAI(base_url=base_url + "/v1", api_key=ml, max_retries=0) as client:
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=30)
        list(
            client.chat.completions.create(
                model="gpt-4o", messages=PROMPT, max_tokens=40, stream=True
            )
        )
    with anthropic.Anthropic(base_url=base_url, api_key=ml, max_retries=0) as claude:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=50, messages=PROMPT)
    web_client = openai.OpenAI(base_url=base_url + "/v1", api_key=web_key, max_retries=0)
    with web_client, pytest.raises(openai.RateLimitError):
        web_client.chat.completions.create(model="gpt-4o", messages=PROMPT, max_tokens=500)


def check_span(attributes: dict[str, Any], row: LedgerRow, names: Naming) -> None:
    provider = "anthropic" if row.surface == "anthropic.messages" else "openai"
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == row.requested_model
    assert attributes["gen_ai.response.model"] == row.served_model
    assert row.output_ceiling is not None  # a budget applies: the ceiling reserved for
    assert attributes["gen_ai.request.max_tokens"] == row.output_ceiling
    assert attributes["gen_ai.usage.cost"] == pytest.approx(row.cost_nanos / 1e9)
    assert attributes["spendgate.cost_nanos"] == row.cost_nanos
    if names is not Naming.EARLIER:
        assert attributes["gen_ai.provider.name"] == provider
        assert attributes["gen_ai.usage.input_tokens"] == row.input_tokens
        assert attributes["gen_ai.usage.output_tokens"] == row.output_tokens
    else:
        assert "gen_ai.provider.name" not in attributes
    if names is not Naming.LATEST:
        assert attributes["gen_ai.system"] == provider
        assert attributes["gen_ai.usage.prompt_tokens"] == row.input_tokens
        assert attributes["gen_ai.usage.completion_tokens"] == row.output_tokens
    else:
        assert "gen_ai.system" not in attributes


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path / "spendgate.db", configure=budgets).start()
    try:
        yield harness
    finally:
        harness.stop()


def test_spans_and_metrics_in_memory_equal_the_ledger(harness: GatewayHarness) -> None:
    spans = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    gateway = harness.gateway
    telemetry = Telemetry(
        resource={"service.name": "spendgate-test"},
        names=Naming.LATEST,
        kind_of=lambda name: gateway.providers[name].kind.value,
        span_exporter=spans,
        metric_reader=reader,
    )
    gateway.events.subscribe(telemetry)
    ml = harness.create_key(name="ml", team="ml")
    web_key = harness.create_key(name="web", team="web")
    workload(harness.url, ml, web_key)
    rows = {row.request_id: row for row in harness.ledger()}
    refused = harness.ledger(blocked=True)
    telemetry.force_flush()

    finished = spans.get_finished_spans()
    assert len(finished) == len(rows) + len(refused) == 4
    by_id = {span.attributes["spendgate.request_id"]: span for span in finished}  # type: ignore[index]
    for request_id, row in rows.items():
        span = by_id[request_id]
        attributes = dict(span.attributes or {})
        check_span(attributes, row, Naming.LATEST)
        assert span.name == f"chat {row.requested_model}"
        assert span.end_time - span.start_time == pytest.approx(row.latency_ms * 1e6, abs=1e3)  # type: ignore[operator]
        assert attributes["spendgate.outcome"] == "served"
    blocked = dict(by_id[refused[0].request_id].attributes or {})
    assert blocked["spendgate.outcome"] == "refused"
    assert blocked["spendgate.blocked_by"] == "tiny"
    assert blocked["error.type"] == "tiny"

    data = reader.get_metrics_data()
    assert data is not None
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    usage = metrics["gen_ai.client.token.usage"].data.data_points
    for kind, field in (("input", "input_tokens"), ("output", "output_tokens")):
        total = sum(p.sum for p in usage if p.attributes["gen_ai.token.type"] == kind)  # type: ignore[attr-defined,index]
        assert total == sum(getattr(row, field) for row in rows.values())
    durations = metrics["gen_ai.client.operation.duration"].data.data_points
    assert sum(p.count for p in durations) == len(rows)  # type: ignore[attr-defined]
    assert {p.attributes["gen_ai.provider.name"] for p in durations} == {"openai", "anthropic"}
    telemetry.shutdown()


# ---------------------------------------------------------------------------- OTLP/HTTP


class Receiver:
    """An OTLP/HTTP receiver on loopback: it keeps every export request, decoded."""

    def __init__(self) -> None:
        self.traces: list[ExportTraceServiceRequest] = []
        self.metrics: list[ExportMetricsServiceRequest] = []
        self.headers: list[dict[str, str]] = []
        self.loop = asyncio.new_event_loop()
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    async def _traces(self, request: web.Request) -> web.Response:
        assert request.content_type == "application/x-protobuf"
        self.traces.append(ExportTraceServiceRequest.FromString(await request.read()))
        self.headers.append(dict(request.headers))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.append(ExportMetricsServiceRequest.FromString(await request.read()))
        self.headers.append(dict(request.headers))
        return web.Response(body=b"", content_type="application/x-protobuf")

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/traces", self._traces)
        app.router.add_post("/v1/metrics", self._metrics)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def __enter__(self) -> Receiver:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()

    def spans(self) -> list[Any]:
        return [
            span
            for request in self.traces
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for span in scope.spans
        ]


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


@pytest.mark.parametrize(
    ("opt_in", "names"),
    [(None, Naming.EARLIER), ("http,gen_ai_latest_experimental/dup", Naming.BOTH)],
)
def test_otlp_http_export_reaches_a_real_receiver(
    tmp_path: Path, opt_in: str | None, names: Naming
) -> None:
    url = f"sqlite:///{tmp_path / 'spendgate.db'}"
    with SimulatorThread() as sim, Receiver() as receiver:

        def configure(data: dict[str, Any]) -> None:
            budgets(data)
            data["telemetry"] = {
                "otlp": {"endpoint": f"http://127.0.0.1:{receiver.port}", "service_name": "sg-e2e"}
            }

        config = write_config(tmp_path, sim.url, configure=configure)
        ml = create_key_direct(config, name="ml", team="ml")
        web_key = create_key_direct(config, name="web", team="web")
        extra = {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20collector-secret"}
        if opt_in is not None:
            extra["OTEL_SEMCONV_STABILITY_OPT_IN"] = opt_in
        process = GatewayProcess(config, env=gateway_env(**extra)).start()
        try:
            workload(process.url, ml.secret, web_key.secret)
        finally:
            assert process.stop() == 0  # exports what is left, then exits

        rows = [row for row in read_rows(url) if row.blocked_by is None]
        spans = receiver.spans()
        assert len(rows) == 3
        assert len(spans) == 4  # and the refusal
        assert all(h.get("Authorization") == "Bearer collector-secret" for h in receiver.headers)
        resource = {
            a.key: value(a.value) for a in receiver.traces[0].resource_spans[0].resource.attributes
        }
        assert resource["service.name"] == "sg-e2e"
        by_id = {}
        for span in spans:
            attributes = {a.key: value(a.value) for a in span.attributes}
            by_id[attributes["spendgate.request_id"]] = attributes
        for row in rows:
            check_span(by_id[row.request_id], row, names)

        points = [
            (metric.name, point)
            for request in receiver.metrics
            for resource_metrics in request.resource_metrics
            for scope in resource_metrics.scope_metrics
            for metric in scope.metrics
            for point in metric.histogram.data_points
        ]
        usage = {
            kind: sum(
                p.sum
                for name, p in points
                if name == "gen_ai.client.token.usage"
                and {a.key: value(a.value) for a in p.attributes}["gen_ai.token.type"] == kind
            )
            for kind in ("input", "output")
        }
        assert usage == {
            "input": sum(row.input_tokens for row in rows),
            "output": sum(row.output_tokens for row in rows),
        }
        durations = [p for name, p in points if name == "gen_ai.client.operation.duration"]
        assert sum(p.count for p in durations) == 3
