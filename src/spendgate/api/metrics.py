"""GET /metrics: Prometheus text exposition of the outcome events' counters
(`spendgate.events.metrics`) and of what is true now, read at scrape time: every budget's
counters, the admission lines, the circuit breakers, the loops blocked.

Behind the admin token (``Authorization: Bearer``: an org admin or an org-wide viewer), or
the token named by ``metrics.token_env`` (for ``/metrics`` only, compared in constant time),
unless ``server.metrics_public: true``: team and service names, models and budgets are not
for everyone who can reach the port. ``metrics.port`` serves ``/metrics``, and nothing else,
on a listener of its own (`serve_metrics`), e.g. for a scrape network."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from spendgate.api.auth import AdminDisabled, authenticate, authorize, credential
from spendgate.api.errors import error_middleware, security_headers
from spendgate.domain.admission import Admitted
from spendgate.domain.budgets import BudgetScope
from spendgate.domain.key_limits import KEY_BUDGET_PREFIX
from spendgate.domain.loops import LoopBlock
from spendgate.domain.roles import Access
from spendgate.errors import AuthenticationFailed, StorageError
from spendgate.events.metrics import NANOS_PER_DOLLAR, PERSONAL, Metrics, bounded_reason
from spendgate.gateway import Gateway
from spendgate.services.admission_queue import Waited
from spendgate.services.budgets import BudgetView

log = logging.getLogger("spendgate.metrics")

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


@dataclass
class MetricsListener:
    """The listener of ``metrics.port``, once started; closed with the gateway's app."""

    gateway: Gateway
    metrics: Metrics
    token: str | None = None  # metrics.token_env's value
    runner: web.AppRunner | None = field(default=None, repr=False)
    port: int | None = None  # where it listens


LISTENER: web.AppKey[MetricsListener] = web.AppKey("metrics_listener", MetricsListener)


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    """Subscribe a `Metrics` to the gateway's events and serve it at ``GET /metrics``
    (unless ``server.metrics`` is false: nothing counted, ``404``)."""
    gateway = app[gateway_key]
    if not gateway.config.server.metrics:
        return
    config = gateway.config.metrics
    metrics = Metrics(config)
    gateway.events.subscribe(metrics)
    gateway.admission.watchers.append(
        lambda key, waited: metrics.admission_waited(
            key.partition("|")[0], waited.waited_s, _ended(waited)
        )
    )
    gateway.alerter.watchers.append(metrics)
    gateway.alerter.inbox.on_drop = metrics.alert_event_dropped
    token = gateway.env.get(config.token_env) if config.token_env else None
    listener = MetricsListener(gateway, metrics, token or None)
    app[METRICS] = metrics
    app[LISTENER] = listener
    app.router.add_get("/metrics", _handler(listener))
    app.on_cleanup.append(_close_listener)


class MetricsListenError(OSError):
    """``metrics.port`` (on ``metrics.host``) cannot be listened on: `serve` names that key,
    not ``--port``/``server.port``, in what it says."""

    def __init__(self, cause: OSError, host: str, port: int) -> None:
        super().__init__(cause.errno, cause.strerror)
        self.host, self.port = host, port


async def serve_metrics(app: web.Application, host: str, *, reuse_port: bool = False) -> None:
    """``metrics.port`` set: serve ``/metrics`` alone on ``metrics.host`` (else ``host``)
    and that port. ``reuse_port``: beside the other workers of ``serve --workers N`` on the
    same port (SO_REUSEPORT); workers on a socket inherited from the supervisor (no
    SO_REUSEPORT) leave that port to the first of them. Either way each scrape answers the
    counters summed over every worker (`Metrics.render`)."""
    listener = app.get(LISTENER)
    port = listener.gateway.config.metrics.port if listener is not None else None
    if listener is None or port is None:
        return  # no metrics (server.metrics: false), or no listener of their own
    fleet = listener.gateway.fleet
    if fleet is not None and not reuse_port and fleet.index != 0:
        return
    config = listener.gateway.config.metrics
    only = web.Application(middlewares=[error_middleware])
    only.on_response_prepare.append(security_headers)
    only.router.add_get("/metrics", _handler(listener))
    runner = web.AppRunner(only, handle_signals=False, access_log=None)
    await runner.setup()
    listener.runner = runner
    site = web.TCPSite(
        runner, config.host or host, config.port, reuse_address=True, reuse_port=reuse_port or None
    )
    try:
        await site.start()  # a failure is cleaned up with the app (`_close_listener`)
    except OSError as exc:  # said as metrics.port's, not as the gateway's own port's
        raise MetricsListenError(exc, config.host or host, port) from exc
    for address in runner.addresses:
        if isinstance(address, tuple):
            listener.port = int(address[1])
            break


async def _close_listener(app: web.Application) -> None:
    listener = app[LISTENER]
    if listener.runner is not None:
        await listener.runner.cleanup()
        listener.runner = None


def _handler(
    listener: MetricsListener,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = listener.gateway
        if not gateway.config.server.metrics_public:
            await _allow(request, gateway, listener.token)
        config = gateway.config.metrics
        personal = {BudgetScope(label) for label in listener.metrics.personal}
        gauges: list[Collector] = [RuntimeGauges(gateway)]
        try:
            views = await gateway.budget_service.overview()
            blocks = await gateway.loop_service.blocks()  # blocked now, and enforced
        except StorageError as exc:
            # While a store fails the scrape still answers what this process counted (the
            # refusals of the outage among it); only the gauges read from storage are out.
            log.warning("metrics without storage's gauges", extra={"error": str(exc)})
        else:
            budget_gauges = BudgetGauges(views, config.max_budget_series, named=personal)
            gauges = [budget_gauges, *gauges, LoopGauges(blocks, gateway)]
        fleet = gateway.fleet
        body = listener.metrics.render(
            gauges, multiprocess_dir=fleet.metrics_dir if fleet else None
        )
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    return handler


async def _allow(request: web.Request, gateway: Gateway, token: str | None) -> None:
    given = credential(request)
    if token is not None and given is not None and _same(given, token):
        return
    try:
        authorize(await authenticate(request, gateway), Access.READ)  # spans every team
    except AdminDisabled:
        if token is None:
            raise
        raise AuthenticationFailed(
            "This endpoint needs the metrics token (metrics.token_env) as 'Authorization: Bearer'."
        ) from None


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


def _ended(waited: Waited) -> str:
    if isinstance(waited.decision, Admitted):
        return "admitted"
    return "timed_out" if waited.timed_out else "refused"


class BudgetGauges(Collector):
    """Per-budget gauges from budget views read at scrape time. A budget per user, key or
    session gets no series per member: it is summed into how many members it has in each
    state, unless its scope is in ``named`` (``metrics.labels`` opted in ``user`` or
    ``key``). A key's own budget (``key:<id>``) is left out."""

    def __init__(
        self,
        views: Sequence[BudgetView],
        max_series: int = 500,
        named: frozenset[BudgetScope] | set[BudgetScope] = frozenset(),
    ) -> None:
        self._views = views
        self._max = max_series
        self._named = named

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = ["budget", "member", "unit"]
        spent = GaugeMetricFamily(
            "spendgate_budget_spent",
            "Spent this window (dollars, tokens or requests)",
            None,
            labels,
        )
        reserved = GaugeMetricFamily(
            "spendgate_budget_reserved", "Reserved by requests in flight", None, labels
        )
        limit = GaugeMetricFamily("spendgate_budget_limit", "The limit in force", None, labels)
        state = GaugeMetricFamily(
            "spendgate_budget_state",
            "1 for the state each budget member is in (ok, soft, held, refusing, exhausted)",
            None,
            ["budget", "member", "state"],
        )
        members = GaugeMetricFamily(
            "spendgate_budget_members",
            "Members of a per-user, per-key or per-session budget, by state",
            None,
            ["budget", "state"],
        )
        counted: dict[tuple[str, str], int] = {}
        series = 0
        for view in self._views:
            budget = view.budget
            if budget.name.startswith(KEY_BUDGET_PREFIX):
                continue
            scope = budget.target.scope
            if scope.value in PERSONAL and scope not in self._named:
                slot = (budget.name, view.condition)
                counted[slot] = counted.get(slot, 0) + 1
                continue
            if series >= self._max:
                continue
            series += 1
            unit = budget.unit.value
            scale = NANOS_PER_DOLLAR if unit == "usd" else 1
            row = [budget.name, view.member, unit]
            spent.add_metric(row, view.state.spent / scale)
            reserved.add_metric(row, view.state.reserved / scale)
            limit.add_metric(row, view.state.limit / scale)
            state.add_metric([budget.name, view.member, view.condition], 1)
        for (name, condition), count in sorted(counted.items()):
            members.add_metric([name, condition], count)
        yield from (spent, reserved, limit, state, members)


class RuntimeGauges(Collector):
    """What this process holds now: requests in flight, requests waiting in each budget's
    admission line, circuit breakers open per model."""

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    def collect(self) -> Iterator[Metric]:
        gateway = self._gateway
        inflight = GaugeMetricFamily(
            "spendgate_requests_in_flight", "Proxied requests running now", gateway.inflight
        )
        waiting = GaugeMetricFamily(
            "spendgate_admission_waiting",
            "Requests waiting now in a budget's admission line",
            None,
            ["budget"],
        )
        by_budget: dict[str, int] = {}
        for key, count in gateway.admission.lines().items():
            budget = bounded_reason(key.partition("|")[0])
            by_budget[budget] = by_budget.get(budget, 0) + count
        for budget, count in sorted(by_budget.items()):
            waiting.add_metric([budget], count)
        breakers = GaugeMetricFamily(
            "spendgate_breakers_open",
            "Circuit breakers (one per key and model) open now, by model: open (cooling "
            "down) or half_open (the next request probes)",
            None,
            ["model", "state"],
        )
        found = gateway.breakers
        if found is not None:
            for (model, phase), count in sorted(found.open_by_model().items()):
                breakers.add_metric([model, phase], count)
        yield from (inflight, waiting, breakers)


class LoopGauges(Collector):
    """Loops blocked now (from storage: across every process), by scope and model."""

    def __init__(self, blocks: Sequence[LoopBlock], gateway: Gateway) -> None:
        self._blocks = blocks
        self._now = gateway.clock.now()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        blocked = GaugeMetricFamily(
            "spendgate_loops_blocked",
            "Loops blocked now: a key's repeated request (pair) or a whole key (key)",
            None,
            ["scope", "model"],
        )
        found: dict[tuple[str, str], int] = {}
        for block in self._blocks:
            if block.blocks(self._now):
                slot = ("key" if block.key_wide else "pair", block.model)
                found[slot] = found.get(slot, 0) + 1
        for (scope, model), count in sorted(found.items()):
            blocked.add_metric([scope, model], count)
        yield blocked
