"""Prometheus metrics: a subscriber of the outcome events, like the access log. Counters of
requests, tokens, cost, refusals, rejections, downgrades, fallbacks, breaker opens; histograms
of request latency and time to first byte. Labels stay bounded: team, service, model,
provider, surface, status, budget, reason; never a user, a key or a session (a refusal by a
key's own budget or by a per-user cap is named by its kind, not by whom it refused).

The per-budget gauges are read from storage at scrape time (`budget_families`): their
counters live there, not here."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.events import (
    AuthFailed,
    BreakerOpened,
    Event,
    LeaseLapsed,
    Refused,
    Rejected,
    Served,
    ThresholdCrossed,
    UpstreamFailed,
    UsageAnomaly,
)

NANOS_PER_DOLLAR = 1_000_000_000
# Whose they are: a label that names one of these would grow without bound.
PERSONAL = ("key", "user", "session")
IDENTITY = ("team", "service")
LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


def bounded_reason(reason: str) -> str:
    """What refused, without whom: ``key:k_1`` -> ``key``, ``request-cap:user:alice`` ->
    ``request-cap:user``, ``hidden-input:key:k_1:requests`` -> ``hidden-input:key``."""
    parts = reason.split(":")
    for i, part in enumerate(parts):
        if part in PERSONAL:
            return ":".join(parts[: i + 1])
    return reason


class Metrics:
    """Subscribe an instance to `spendgate.events.Events`; `render` writes the exposition."""

    def __init__(self) -> None:
        # The labelled children met so far: `labels()` validates and locks on every call,
        # several microseconds a request on the hot path (docs/admin-api.md#metrics).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        who = (*IDENTITY, "model", "provider")
        self.requests = Counter(
            "spendgate_requests",
            "Outcomes of request attempts (served, refused, rejected, auth_failed, "
            "upstream_failed)",
            ("outcome", "status", "surface", *who),
            registry=r,
        )
        self.tokens = Counter(
            "spendgate_tokens",
            "Tokens charged, by type (input, cached_input, cache_write, output, reasoning)",
            ("type", *who),
            registry=r,
        )
        self.cost = Counter("spendgate_cost_dollars", "Dollars charged", who, registry=r)
        self.refusals = Counter(
            "spendgate_refusals",
            "Requests refused by a budget, limit, request cap, loop detector or breaker",
            ("reason", *IDENTITY, "model"),
            registry=r,
        )
        self.rejections = Counter(
            "spendgate_rejections",
            "Requests turned away before admission (bad body, unknown model, no valid key, ...)",
            ("reason", "surface", *IDENTITY),
            registry=r,
        )
        self.upstream_failures = Counter(
            "spendgate_upstream_failures",
            "Attempts the provider did not answer well (unreachable, timeout, 429, 5xx)",
            ("reason", "provider", "model"),
            registry=r,
        )
        self.downgrades = Counter(
            "spendgate_downgrades",
            "Requests a downgrade rule sent to a cheaper model",
            ("rule", "requested_model", "model"),
            registry=r,
        )
        self.fallbacks = Counter(
            "spendgate_fallbacks",
            "Fallback attempts, by the model that failed and the one tried instead",
            ("from_model", "model", "provider"),
            registry=r,
        )
        self.breaker_opens = Counter(
            "spendgate_breaker_opens", "Circuit breakers opened", ("model",), registry=r
        )
        self.thresholds = Counter(
            "spendgate_threshold_crossings",
            "Soft thresholds of a budget crossed",
            ("budget",),
            registry=r,
        )
        self.anomalies = Counter(
            "spendgate_usage_anomalies",
            "Provider usage not believed (charged an estimate)",
            ("provider", "model"),
            registry=r,
        )
        self.lapsed = Counter(
            "spendgate_lapsed_leases", "Reservations settled at their worst case", registry=r
        )
        self.latency = Histogram(
            "spendgate_request_duration_seconds",
            "From the request's arrival to the end of its answer, served requests",
            ("surface", "model", "provider"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.ttfb = Histogram(
            "spendgate_ttfb_seconds",
            "From the request's arrival to the provider's first byte, served requests",
            ("surface", "model", "provider"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

    def __call__(self, event: Event) -> None:
        if isinstance(event, Served):
            self._row("served", event.row)
            self._timings(event.row)
        elif isinstance(event, Refused):
            self._row("refused", event.row)
            row = event.row
            self.refusals.labels(
                bounded_reason(event.reason), row.team or "", row.service or "", row.requested_model
            ).inc()
        elif isinstance(event, UpstreamFailed):
            self._upstream_failed(event)
        elif isinstance(event, Rejected | AuthFailed):
            self._rejected(event)
        elif isinstance(event, LeaseLapsed):
            self.lapsed.inc()
            self._charged(event.row)
        elif isinstance(event, BreakerOpened):
            self.breaker_opens.labels(event.model).inc()
        elif isinstance(event, ThresholdCrossed):
            self.thresholds.labels(bounded_reason(event.budget)).inc()
        elif isinstance(event, UsageAnomaly):
            self.anomalies.labels(event.provider, event.model).inc()

    def render(
        self, extra: Iterable[Collector] = (), *, multiprocess_dir: str | None = None
    ) -> bytes:
        """The text exposition of these metrics, then of ``extra`` collectors.
        ``multiprocess_dir``: these metrics summed over every worker process that wrote
        there (prometheus_client's multiprocess mode, `serve --workers N`)."""
        if multiprocess_dir is None:
            out = generate_latest(self.registry)
        else:
            registry = CollectorRegistry(auto_describe=False)
            MultiProcessCollector(registry, path=multiprocess_dir)  # type: ignore[no-untyped-call]
            out = generate_latest(registry)
        for collector in extra:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(collector)
            out += generate_latest(registry)
        return out

    # ---------------------------------------------------------------------------------
    def _child(self, metric: Counter | Histogram, *labels: str) -> Any:
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def _who(self, row: LedgerRow) -> tuple[str, str, str, str]:
        return (row.team or "", row.service or "", row.requested_model, row.provider)

    def _row(self, outcome: str, row: LedgerRow) -> None:
        self._child(self.requests, outcome, str(row.status), row.surface, *self._who(row)).inc()
        self._charged(row)
        if row.route_kind == "downgrade":
            model = row.routed_model or row.served_model
            self.downgrades.labels(row.route_rule or "", row.requested_model, model).inc()
        if row.attempt > 0:
            model = row.routed_model or row.requested_model
            self.fallbacks.labels(row.fallback_from or "", model, row.provider).inc()

    def _charged(self, row: LedgerRow) -> None:
        who = self._who(row)
        for kind, count in (
            ("input", row.input_tokens),
            ("cached_input", row.cached_input_tokens),
            ("cache_write", row.cache_write_tokens),
            ("output", row.output_tokens),
            ("reasoning", row.reasoning_tokens),
        ):
            if count:
                self._child(self.tokens, kind, *who).inc(count)
        if row.cost_nanos:
            self._child(self.cost, *who).inc(row.cost_nanos / NANOS_PER_DOLLAR)

    def _timings(self, row: LedgerRow) -> None:
        labels = (row.surface, row.requested_model, row.provider)
        self._child(self.latency, *labels).observe(row.latency_ms / 1000)
        if row.ttfb_ms is not None:
            self._child(self.ttfb, *labels).observe(row.ttfb_ms / 1000)

    def _upstream_failed(self, event: UpstreamFailed) -> None:
        self.upstream_failures.labels(event.reason, event.provider, event.model).inc()
        row = event.row
        if row is not None:
            self._row("upstream_failed", row)
            return
        team, service = _identity(event.key)
        self.requests.labels(
            "upstream_failed", str(event.status), "", team, service, event.model, event.provider
        ).inc()

    def _rejected(self, event: Rejected | AuthFailed) -> None:
        if isinstance(event, AuthFailed):
            outcome, status, team, service = "auth_failed", 401, "", ""
        else:
            outcome, status = "rejected", event.status
            team, service = _identity(event.key)
        # The model a rejected request named may be any string: left out.
        self.requests.labels(outcome, str(status), event.surface, team, service, "", "").inc()
        self.rejections.labels(event.reason, event.surface, team, service).inc()


def _identity(key: ApiKey | None) -> tuple[str, str]:
    if key is None:
        return "", ""
    return key.team or "", key.service or ""
