"""GET /metrics: Prometheus text exposition of the outcome events' counters
(`spendgate.events.metrics`) and of every budget's counters, read at scrape time.

Behind the admin token (``Authorization: Bearer``: an org admin or an org-wide viewer)
unless ``server.metrics_public: true``: team and service names, models and budgets are not
for everyone who can reach the port."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from spendgate.api.auth import authenticate, authorize
from spendgate.domain.key_limits import KEY_BUDGET_PREFIX
from spendgate.domain.roles import Access
from spendgate.events.metrics import NANOS_PER_DOLLAR, PERSONAL, Metrics
from spendgate.gateway import Gateway
from spendgate.services.budgets import BudgetView

METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    """Subscribe a `Metrics` to the gateway's events and serve it at ``GET /metrics``
    (unless ``server.metrics`` is false: nothing counted, ``404``)."""
    if not app[gateway_key].config.server.metrics:
        return
    metrics = Metrics()
    app[gateway_key].events.subscribe(metrics)
    app[METRICS] = metrics

    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = request.app[gateway_key]
        if not gateway.config.server.metrics_public:
            authorize(await authenticate(request, gateway), Access.READ)  # spans every team
        views = await gateway.budget_service.overview()
        fleet = gateway.fleet
        body = request.app[METRICS].render(
            [BudgetGauges(views)], multiprocess_dir=fleet.metrics_dir if fleet else None
        )
        return web.Response(body=body, headers={"content-type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", handler)


class BudgetGauges(Collector):
    """Per-budget gauges from budget views read at scrape time. A budget per user, key or
    session gets no series per member: it is summed into how many members it has in each
    state. A key's own budget (``key:<id>``) is left out."""

    def __init__(self, views: Sequence[BudgetView], max_series: int = 500) -> None:
        self._views = views
        self._max = max_series

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
            if budget.target.scope.value in PERSONAL:
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
