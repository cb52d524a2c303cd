"""OpenTelemetry: a subscriber of the outcome events that makes one span per request
attempt and records the GenAI client metrics, exported over OTLP/HTTP (docs/observability.md).

Spans and metrics follow the GenAI semantic conventions. Their names changed over time;
like the OTel instrumentations, ``$OTEL_SEMCONV_STABILITY_OPT_IN`` chooses:

* unset (or without a ``gen_ai`` value): the earlier names, ``gen_ai.system``,
  ``gen_ai.usage.prompt_tokens``, ``gen_ai.usage.completion_tokens``;
* ``gen_ai_latest_experimental``: the current ones, ``gen_ai.provider.name``,
  ``gen_ai.usage.input_tokens``, ``gen_ai.usage.output_tokens``;
* ``gen_ai_latest_experimental/dup``: both.

The request path pays for one append to a bounded queue: a thread of its own turns the
events into spans and histogram values (the SDK's attribute checks cost tens of
microseconds an event, too much for the event loop), spans leave in batches from the
SDK's thread (``BatchSpanProcessor``), metrics from a periodic reader's. A full queue
drops the event and counts it (`Telemetry.dropped`). The thread shares the interpreter
with the event loop: its work is CPU the process spends, off the request's path but not
free. The span's times come from the ledger row (arrival, latency), never from a clock
read here. Needs the ``otel`` extra (``pip install 'spendgate[otel]'``).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any
from urllib.parse import unquote

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from spendgate.config.telemetry import OtlpConfig
from spendgate.domain.ledger import LedgerRow
from spendgate.events import Event, LeaseLapsed, Refused, Served, UpstreamFailed

log = logging.getLogger("spendgate.otel")

OPT_IN_ENV = "OTEL_SEMCONV_STABILITY_OPT_IN"
NANOS_PER_DOLLAR = 1_000_000_000
MAX_QUEUE = 10_000  # events waiting for the exporter thread; past it they are dropped
FLUSH_TIMEOUT_S = 30.0
# The GenAI conventions' advised bucket boundaries.
TOKEN_BUCKETS = [4**i for i in range(14)]
DURATION_BUCKETS = [0.01 * 2**i for i in range(14)]

OPERATIONS = {
    "openai.chat": "chat",
    "openai.responses": "chat",
    "anthropic.messages": "chat",
    "openai.embeddings": "embeddings",
    "gemini.generate_content": "generate_content",
    "gemini.stream_generate_content": "generate_content",
}
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "gemini": "gcp.gemini"}


class Naming(Enum):
    EARLIER = "earlier"
    LATEST = "latest"
    BOTH = "both"


def naming(opt_in: str | None) -> Naming:
    """What ``$OTEL_SEMCONV_STABILITY_OPT_IN`` asks for, as the OTel instrumentations read it."""
    values = {value.strip() for value in (opt_in or "").split(",")}
    if "gen_ai_latest_experimental/dup" in values:
        return Naming.BOTH
    if "gen_ai_latest_experimental" in values:
        return Naming.LATEST
    return Naming.EARLIER


def provider_name(kind: str | None, configured: str) -> str:
    """The convention's provider name for a provider ``kind``; an OpenAI-compatible one (or
    an unknown kind) is named as the config names it."""
    return PROVIDERS.get(kind or "", configured)


def row_attributes(row: LedgerRow, provider: str, names: Naming) -> dict[str, Any]:
    """The span's attributes for a ledger row (pure: unit-tested)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": OPERATIONS.get(row.surface, row.surface),
        "gen_ai.request.model": row.requested_model,
        "gen_ai.response.model": row.served_model,
        "gen_ai.usage.cost": row.cost_nanos / NANOS_PER_DOLLAR,
        "spendgate.request_id": row.request_id,
        "spendgate.surface": row.surface,
        "spendgate.provider": row.provider,
        "spendgate.cost_nanos": row.cost_nanos,
        "spendgate.status": row.status,
        "spendgate.streamed": row.streamed,
        "spendgate.usage_estimated": row.usage_estimated,
        "spendgate.unreconciled": row.unreconciled,
        "spendgate.key_id": row.key_id,
    }
    if names is not Naming.EARLIER:
        attributes["gen_ai.provider.name"] = provider
        attributes["gen_ai.usage.input_tokens"] = row.input_tokens
        attributes["gen_ai.usage.output_tokens"] = row.output_tokens
    if names is not Naming.LATEST:
        attributes["gen_ai.system"] = provider
        attributes["gen_ai.usage.prompt_tokens"] = row.input_tokens
        attributes["gen_ai.usage.completion_tokens"] = row.output_tokens
    optional = {
        "gen_ai.request.max_tokens": row.output_ceiling,
        "spendgate.clamped_from": row.clamped_from,
        "spendgate.team": row.team,
        "spendgate.service": row.service,
        "spendgate.org": row.org,
        "spendgate.user": row.user,
        "spendgate.blocked_by": row.blocked_by,
        "spendgate.would_cost_nanos": row.would_cost_nanos or None,
        "spendgate.route.rule": row.route_rule,
        "spendgate.route.kind": row.route_kind,
        "spendgate.routed_model": row.routed_model,
        "spendgate.fallback_from": row.fallback_from,
        "spendgate.upstream_request_id": row.upstream_request_id,
        "spendgate.ttfb_ms": row.ttfb_ms,
        "gen_ai.usage.cache_read.input_tokens": row.cached_input_tokens or None,
        "gen_ai.usage.cache_creation.input_tokens": row.cache_write_tokens or None,
        "gen_ai.usage.reasoning.output_tokens": row.reasoning_tokens or None,
    }
    attributes.update({k: v for k, v in optional.items() if v is not None})
    if row.settled_above:
        attributes["spendgate.settled_above"] = list(row.settled_above)
    return attributes


def parse_headers(text: str | None) -> dict[str, str]:
    """``key=value,key=value`` (values URL-encoded), as ``OTEL_EXPORTER_OTLP_HEADERS``."""
    headers: dict[str, str] = {}
    for part in (text or "").split(","):
        key, sep, value = part.partition("=")
        if sep and key.strip():
            headers[key.strip().lower()] = unquote(value.strip())
    return headers


class Telemetry:
    """Subscribe an instance to `spendgate.events.Events`; `shutdown` exports what is left."""

    def __init__(
        self,
        *,
        resource: Mapping[str, str],
        names: Naming,
        kind_of: Callable[[str], str | None],
        span_exporter: SpanExporter | None = None,
        metric_reader: MetricReader | None = None,
        max_queue: int = MAX_QUEUE,
    ) -> None:
        self.names = names
        self._kind_of = kind_of
        self.dropped = 0
        self._max_queue = max_queue
        self._queue: deque[Event | threading.Event] = deque()
        self._wake = threading.Event()
        self._stopping = False
        attributes = Resource.create(dict(resource))
        self.tracer_provider = TracerProvider(resource=attributes)
        if span_exporter is not None:
            self.tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
        readers = [metric_reader] if metric_reader is not None else []
        self.meter_provider = MeterProvider(resource=attributes, metric_readers=readers)
        self._tracer = self.tracer_provider.get_tracer("spendgate")
        meter = self.meter_provider.get_meter("spendgate")
        self._tokens = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self._duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        self._thread = threading.Thread(target=self._run, name="spendgate-otel", daemon=True)
        self._thread.start()

    def __call__(self, event: Event) -> None:
        """On the request path: queue the event for the exporter thread, nothing more."""
        if not isinstance(event, Served | Refused | UpstreamFailed | LeaseLapsed):
            return
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("telemetry queue full: dropping events", extra={"max": self._max_queue})
            return
        self._queue.append(event)
        self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            while self._queue:
                item = self._queue.popleft()
                if isinstance(item, threading.Event):  # a flush waiting for what came before
                    item.set()
                    continue
                try:
                    self._export(item)
                except Exception:
                    log.exception("telemetry: an event was not exported")
            if self._stopping:
                return

    def _export(self, event: Event) -> None:
        if isinstance(event, Served):
            self._record(event.row, "served", None)
        elif isinstance(event, Refused):
            self._record(event.row, "refused", event.reason)
        elif isinstance(event, UpstreamFailed) and event.row is not None:
            self._record(event.row, "upstream_failed", event.reason)
        elif isinstance(event, LeaseLapsed):
            self._record(event.row, "lapsed", "lease_lapsed")

    def _record(self, row: LedgerRow, outcome: str, error: str | None) -> None:
        provider = provider_name(self._kind_of(row.provider), row.provider)
        attributes = row_attributes(row, provider, self.names)
        attributes["spendgate.outcome"] = outcome
        if error is not None:
            attributes["error.type"] = error
        operation = attributes["gen_ai.operation.name"]
        start = int(row.ts.timestamp() * 1e9)
        span = self._tracer.start_span(
            f"{operation} {row.requested_model}",
            kind=SpanKind.CLIENT,
            attributes=attributes,
            start_time=start,
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=start + int(row.latency_ms * 1e6))
        if outcome == "refused":
            return  # no operation ran: no duration, no tokens
        self._metrics(row, attributes, error)

    def _metrics(self, row: LedgerRow, span: Mapping[str, Any], error: str | None) -> None:
        common = {
            key: span[key]
            for key in (
                "gen_ai.operation.name",
                "gen_ai.provider.name",
                "gen_ai.system",
                "gen_ai.request.model",
                "gen_ai.response.model",
            )
            if key in span
        }
        if error is not None:
            common["error.type"] = error
        self._duration.record(row.latency_ms / 1000, common)
        self._tokens.record(row.input_tokens, {**common, "gen_ai.token.type": "input"})
        self._tokens.record(row.output_tokens, {**common, "gen_ai.token.type": "output"})

    def force_flush(self) -> None:
        """Export every event queued so far (blocking)."""
        done = threading.Event()
        self._queue.append(done)
        self._wake.set()
        done.wait(FLUSH_TIMEOUT_S)
        self.tracer_provider.force_flush()
        self.meter_provider.force_flush()

    def shutdown(self) -> None:
        """Export what is left and stop the threads (blocking: call it off the event loop)."""
        self._stopping = True
        self._wake.set()
        self._thread.join(FLUSH_TIMEOUT_S)
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def otlp_telemetry(
    config: OtlpConfig,
    env: Mapping[str, str],
    *,
    instance_id: str,
    version: str,
    kind_of: Callable[[str], str | None],
) -> Telemetry:
    """A `Telemetry` exporting to the collector ``config`` names."""
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    headers = parse_headers(env.get(config.headers_env))
    spans = None
    if config.traces:
        spans = OTLPSpanExporter(
            endpoint=f"{config.endpoint}/v1/traces", headers=headers, timeout=config.timeout_s
        )
    reader = None
    if config.metrics:
        exporter = OTLPMetricExporter(
            endpoint=f"{config.endpoint}/v1/metrics", headers=headers, timeout=config.timeout_s
        )
        reader = PeriodicExportingMetricReader(
            exporter, export_interval_millis=config.export_interval_s * 1000
        )
    return Telemetry(
        resource={
            "service.name": config.service_name,
            "service.instance.id": instance_id,
            "service.version": version,
        },
        names=naming(env.get(OPT_IN_ENV)),
        kind_of=kind_of,
        span_exporter=spans,
        metric_reader=reader,
    )
