"""The OTel subscriber only queues on the request path; its own thread exports. A queue
that is full drops events and counts them, and a flush exports everything queued first."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spendgate.domain.ledger import LedgerRow
from spendgate.events import BreakerOpened, Served
from spendgate.events.otel import Naming, Telemetry


def served(n: int) -> Served:
    return Served(
        LedgerRow(
            request_id=f"req_{n}",
            ts=datetime(2026, 12, 7, tzinfo=UTC),
            surface="openai.chat",
            key_id="k_1",
            user=None,
            service=None,
            team="ml",
            org=None,
            tags=(),
            requested_model="gpt-4o-mini",
            served_model="gpt-4o-mini",
            provider="openai",
            input_tokens=10,
            cached_input_tokens=0,
            cache_write_tokens=0,
            output_tokens=n,
            reasoning_tokens=0,
            cost_nanos=1_000,
            status=200,
            latency_ms=2.0,
            ttfb_ms=None,
            streamed=False,
            client_disconnected=False,
            usage_estimated=False,
        )
    )


def test_a_full_queue_drops_and_counts_and_a_flush_exports_the_rest() -> None:
    entered, release = threading.Event(), threading.Event()

    def kind_of(name: str) -> str:  # holds the exporter thread inside the first event
        entered.set()
        release.wait(10)
        return "openai"

    spans = InMemorySpanExporter()
    telemetry = Telemetry(
        resource={"service.name": "t"},
        names=Naming.LATEST,
        kind_of=kind_of,
        span_exporter=spans,
        metric_reader=InMemoryMetricReader(),
        max_queue=5,
    )
    telemetry(served(0))
    assert entered.wait(10)  # the thread took it: the queue is empty again
    for n in range(1, 9):
        telemetry(served(n))  # 5 fit, 3 are dropped
    telemetry(BreakerOpened("k_1", "gpt-4o-mini", 3, 30.0))  # not queued: no span for it
    assert telemetry.dropped == 3
    release.set()
    telemetry.force_flush()
    ids = sorted(span.attributes["spendgate.request_id"] for span in spans.get_finished_spans())  # type: ignore[index]
    assert ids == [f"req_{n}" for n in range(6)]
    telemetry.shutdown()
