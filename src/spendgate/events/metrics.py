"""Prometheus metrics: a subscriber of the outcome events, like the access log. Counters of
requests, tokens, cost, refusals, rejections, downgrades, fallbacks, breakers, loop
detections; histograms of request latency, time to first byte and the gateway's own added
latency. Labels stay bounded: team, service, model, provider, surface, status, budget,
reason; never a user, a key or a session by default (a refusal by a key's own budget or by
a per-user cap is named by its kind, not by whom it refused). ``metrics.labels`` opts in
``user`` and ``key`` on requests, tokens, cost and refusals, each capped at
``metrics.max_label_values`` values (later ones are counted as `OTHER`).

The admission line and the alerts tell their own watchers (`admission_waited`,
`alert_raised`, `alert_delivery`). Gauges of what is true now (budgets, lines, breakers,
blocked loops) are read at scrape time (`spendgate.api.metrics`)."""

from __future__ import annotations

import functools
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from spendgate.config.metrics import MetricsConfig
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.events import (
    AuthFailed,
    BreakerClosed,
    BreakerOpened,
    Event,
    LeaseLapsed,
    LoopStruck,
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
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10)
WAIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
OTHER = "_other"  # an opt-in label's values past its cap
MAX_SUMS = 4_096  # label sets added up between reads; past it they are handed on at once
TOKEN_KINDS = ("input", "cached_input", "cache_write", "output", "reasoning")


def bounded_reason(reason: str) -> str:
    """What refused, without whom: ``key:k_1`` -> ``key``, ``request-cap:user:alice`` ->
    ``request-cap:user``, ``hidden-input:key:k_1:requests`` -> ``hidden-input:key``."""
    parts = reason.split(":")
    for i, part in enumerate(parts):
        if part in PERSONAL:
            return ":".join(parts[: i + 1])
    return reason


class Capped:
    """The values of one opt-in label: the first ``cap`` seen are kept, later ones are
    `OTHER`, so an opted-in user or key label still has a bounded number of series."""

    def __init__(self, cap: int) -> None:
        self._seen: set[str] = set()
        self._cap = cap

    def __call__(self, value: str | None) -> str:
        if not value:
            return ""
        if value in self._seen:
            return value
        if len(self._seen) >= self._cap:
            return OTHER
        self._seen.add(value)
        return value


class Metrics:
    """Subscribe an instance to `spendgate.events.Events`; `render` writes the exposition."""

    def __init__(self, config: MetricsConfig | None = None) -> None:
        config = config or MetricsConfig()
        self.personal = tuple(dict.fromkeys(config.labels))  # "user", "key": opted in
        self._capped = {label: Capped(config.max_label_values) for label in self.personal}
        # The labelled children met so far: `labels()` validates and locks on every call,
        # several microseconds a request on the hot path (docs/admin-api.md#metrics).
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        # Served and refused rows are added up here, per label set, and handed to the
        # counters when the metrics are read (`flush`): each counter increment takes a
        # lock, and a row makes up to seven. Only with in-process values: a worker's
        # multiprocess values are read from files by whichever worker is scraped.
        self._deferred = values.ValueClass is values.MutexValue and _bulk_observe()
        self._sums: dict[tuple[str, ...], list[int]] = {}
        self._observed: dict[tuple[int, tuple[str, ...]], _Observed] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        who = (*IDENTITY, "model", "provider", *self.personal)
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
            ("reason", *IDENTITY, "model", *self.personal),
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
        self.breaker_closes = Counter(
            "spendgate_breaker_closes",
            "Circuit breakers closed (a probe was answered)",
            ("model",),
            registry=r,
        )
        self.loop_detections = Counter(
            "spendgate_loop_detections",
            "Loops detected and blocked: a key's repeated request (pair) or the whole key",
            ("scope", *IDENTITY, "model"),
            registry=r,
        )
        self.alerts_raised = Counter(
            "spendgate_alerts_raised",
            "Alerts this process raised (each alert is raised once across processes)",
            ("kind",),
            registry=r,
        )
        self.alert_deliveries = Counter(
            "spendgate_alert_deliveries",
            "Attempts to deliver an alert: delivered, retrying (failed, tried again later) "
            "or failed (given up)",
            ("channel_kind", "outcome"),
            registry=r,
        )
        # A counter of this module's (not a gauge read at scrape time): with several
        # workers it is summed over them, as the others are, so it never goes back.
        self.alert_events_dropped = Counter(
            "spendgate_alert_events_dropped",
            "Events an alert rule wanted, dropped because the alert queue was full",
            registry=r,
        )
        self.admission_wait = Histogram(
            "spendgate_admission_wait_seconds",
            "Time requests waited in a budget's admission line, by how the wait ended",
            ("budget", "outcome"),
            buckets=WAIT_BUCKETS,
            registry=r,
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
        self.overhead = Histogram(
            "spendgate_overhead_seconds",
            "The gateway's own added latency: the request's duration less the time spent "
            "waiting on providers, served requests",
            ("surface", "model", "provider"),
            buckets=OVERHEAD_BUCKETS,
            registry=r,
        )

    def __call__(self, event: Event) -> None:
        if isinstance(event, Served):
            self._row("served", event.row)
            self._timings(event.row, event.upstream_ms)
        elif isinstance(event, Refused):
            self._row("refused", event.row)
            row = event.row
            self._child(
                self.refusals,
                bounded_reason(event.reason),
                row.team or "",
                row.service or "",
                row.requested_model,
                *self._mine(row.user, row.key_id),
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
        elif isinstance(event, BreakerClosed):
            self.breaker_closes.labels(event.model).inc()
        elif isinstance(event, LoopStruck):
            scope = "key" if event.key_wide else "pair"
            team, service = event.team or "", event.service or ""
            self.loop_detections.labels(scope, team, service, event.model).inc()
        elif isinstance(event, ThresholdCrossed):
            self.thresholds.labels(bounded_reason(event.budget)).inc()
        elif isinstance(event, UsageAnomaly):
            self.anomalies.labels(event.provider, event.model).inc()

    # -- watchers of the admission line and the alerts -------------------------------------
    def admission_waited(self, budget: str, seconds: float, outcome: str) -> None:
        """A wait in a budget's admission line ended: ``admitted``, ``refused`` (waiting
        could not help) or ``timed_out`` (the bound, or the line was full)."""
        self._child(self.admission_wait, bounded_reason(budget), outcome).observe(seconds)

    def alert_raised(self, kind: str) -> None:
        self.alerts_raised.labels(kind).inc()

    def alert_delivery(self, channel_kind: str, outcome: str) -> None:
        self.alert_deliveries.labels(channel_kind, outcome).inc()

    def alert_event_dropped(self) -> None:
        self.alert_events_dropped.inc()

    def render(
        self, extra: Iterable[Collector] = (), *, multiprocess_dir: str | None = None
    ) -> bytes:
        """The text exposition of these metrics, then of ``extra`` collectors.
        ``multiprocess_dir``: these metrics summed over every worker process that wrote
        there (prometheus_client's multiprocess mode, `serve --workers N`)."""
        self.flush()
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

    def _mine(self, user: str | None, key_id: str | None) -> tuple[str, ...]:
        """The values of the opted-in labels (none by default)."""
        if not self.personal:
            return ()
        return tuple(
            self._capped[label](user if label == "user" else key_id) for label in self.personal
        )

    def _who(self, row: LedgerRow) -> tuple[str, ...]:
        who = (row.team or "", row.service or "", row.requested_model, row.provider)
        return who + self._mine(row.user, row.key_id) if self.personal else who

    def _row(self, outcome: str, row: LedgerRow) -> None:
        if self._deferred:
            key = (outcome, str(row.status), row.surface, *self._who(row))
            sums = self._sums.get(key)
            if sums is None:
                if len(self._sums) >= MAX_SUMS:
                    self.flush()
                sums = self._sums[key] = [0, 0, 0, 0, 0, 0, 0]
            sums[0] += 1
            sums[1] += row.input_tokens
            sums[2] += row.cached_input_tokens
            sums[3] += row.cache_write_tokens
            sums[4] += row.output_tokens
            sums[5] += row.reasoning_tokens
            sums[6] += row.cost_nanos
        else:
            self._child(self.requests, outcome, str(row.status), row.surface, *self._who(row)).inc()
            self._charged(row)
        if row.route_kind == "downgrade":
            model = row.routed_model or row.served_model
            self.downgrades.labels(row.route_rule or "", row.requested_model, model).inc()
        if row.attempt > 0:
            model = row.routed_model or row.requested_model
            self.fallbacks.labels(row.fallback_from or "", model, row.provider).inc()

    def flush(self) -> None:
        """Hand the rows added up since the last read to the counters."""
        sums, self._sums = self._sums, {}
        for (outcome, status, surface, *who), (count, *amounts) in sums.items():
            self._child(self.requests, outcome, status, surface, *who).inc(count)
            self._charge(tuple(who), amounts[:5], amounts[5])
        observed, self._observed = self._observed, {}
        for found in observed.values():
            found.hand_on()

    def _charged(self, row: LedgerRow) -> None:
        counts = (
            row.input_tokens,
            row.cached_input_tokens,
            row.cache_write_tokens,
            row.output_tokens,
            row.reasoning_tokens,
        )
        self._charge(self._who(row), counts, row.cost_nanos)

    def _charge(self, who: tuple[str, ...], counts: Sequence[int], cost_nanos: int) -> None:
        for kind, count in zip(TOKEN_KINDS, counts, strict=True):
            if count:
                self._child(self.tokens, kind, *who).inc(count)
        if cost_nanos:
            self._child(self.cost, *who).inc(cost_nanos / NANOS_PER_DOLLAR)

    def _timings(self, row: LedgerRow, upstream_ms: float | None) -> None:
        labels = (row.surface, row.requested_model, row.provider)
        self._observe(self.latency, labels, row.latency_ms / 1000)
        if row.ttfb_ms is not None:
            self._observe(self.ttfb, labels, row.ttfb_ms / 1000)
        if upstream_ms is not None:
            own = max(0.0, row.latency_ms - upstream_ms)
            self._observe(self.overhead, labels, own / 1000)

    def _observe(self, metric: Histogram, labels: tuple[str, ...], seconds: float) -> None:
        child = self._child(metric, *labels)
        if not self._deferred:
            child.observe(seconds)
            return
        key = (id(metric), labels)
        found = self._observed.get(key)
        if found is None:
            if len(self._observed) >= MAX_SUMS:
                self.flush()
            found = self._observed[key] = _Observed(child)
        found.counts[bisect_left(found.bounds, seconds)] += 1  # the first bound >= it
        found.total += seconds

    def _upstream_failed(self, event: UpstreamFailed) -> None:
        self.upstream_failures.labels(event.reason, event.provider, event.model).inc()
        row = event.row
        if row is not None:
            self._row("upstream_failed", row)
            return
        team, service = _identity(event.key)
        key = event.key
        mine = self._mine(key.user, key.id) if key is not None else self._mine(None, None)
        self.requests.labels(
            "upstream_failed",
            str(event.status),
            event.surface,
            team,
            service,
            event.requested_model or event.model,  # as a row's: the name the client sent
            event.provider,
            *mine,
        ).inc()

    def _rejected(self, event: Rejected | AuthFailed) -> None:
        mine = self._mine(None, None)
        if isinstance(event, AuthFailed):
            outcome, status, team, service = "auth_failed", 401, "", ""
        else:
            outcome, status = "rejected", event.status
            team, service = _identity(event.key)
            if event.key is not None:
                mine = self._mine(event.key.user, event.key.id)
        # The model a rejected request named may be any string: left out.
        self.requests.labels(
            outcome, str(status), event.surface, team, service, "", "", *mine
        ).inc()
        self.rejections.labels(event.reason, event.surface, team, service).inc()


class _Observed:
    """A histogram child's observations since the last read: a count per bucket (the
    first whose upper bound is at or above the value, as `Histogram.observe` counts) and
    their sum, handed on in one increment each (`prometheus_client`'s child internals,
    checked once: `_bulk_observe`)."""

    __slots__ = ("bounds", "child", "counts", "total")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.bounds: list[float] = child._upper_bounds
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def hand_on(self) -> None:
        self.child._sum.inc(self.total)
        for index, count in enumerate(self.counts):
            if count:
                self.child._buckets[index].inc(count)


@functools.cache
def _bulk_observe() -> bool:
    """Whether histogram children keep the internals `_Observed` adds to (asked only with
    in-process values: a multiprocess probe would leave a file behind)."""
    probe = Histogram("probe", "probe", registry=None, buckets=(1.0,))
    return all(hasattr(probe, name) for name in ("_upper_bounds", "_buckets", "_sum"))


def _identity(key: ApiKey | None) -> tuple[str, str]:
    if key is None:
        return "", ""
    return key.team or "", key.service or ""
