"""The routing step of the request path: which model serves a request (`decide`), and the
order in which its deployments and fallback models are tried (`attempts`)."""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spendgate.dialects import SurfaceSpec
from spendgate.domain.budgets import BudgetScope, Caller, CounterRef
from spendgate.domain.identity import ApiKey
from spendgate.domain.models import Deployment, ModelRoute
from spendgate.domain.pricing import Price
from spendgate.domain.routing import Decision, RouteFacts
from spendgate.domain.tokens import counting_model
from spendgate.errors import GatewayError
from spendgate.gateway import Snapshot
from spendgate.storage import Storage
from spendgate.upstream.providers import Provider

_TRUE = frozenset({"1", "true", "yes", "on"})


@dataclass(frozen=True, slots=True)
class Attempt:
    route: ModelRoute
    deployment: Deployment
    price: Price
    provider: Provider  # captured now: a reload while the request runs cannot pull it away


async def decide(
    storage: Storage,
    snapshot: Snapshot,
    spec: SurfaceSpec,
    caller: Caller,
    body: dict[str, Any],
    headers: Mapping[str, str],
    now: datetime,
) -> tuple[ModelRoute, Decision | None]:
    """The model that serves the request: by name when no routing rule exists, else the
    router's decision (reading the watched budgets' counters first)."""
    router = snapshot.router
    if not router:
        return snapshot.models.resolve(caller.model, spec.dialect), None
    requested = caller.model

    @functools.cache
    def input_tokens(model: str) -> int:  # counted once per model, only if a premium rule asks
        route = snapshot.models.get(model)
        name = model if route is None else counting_model(model, route.primary.upstream_model)
        return spec.input_counter(name, body).tokens

    facts = RouteFacts(
        has_tools=bool(body.get("tools")),
        opted_in=headers.get(router.premium.header, "").strip().lower() in _TRUE,
        input_tokens=input_tokens,
    )
    watched = router.watched(caller, facts)
    used: dict[str, int] = {}
    per_model: dict[tuple[str, str], int] = {}
    if watched:
        models = router.models_seen(requested)
        used, per_model = await _used(storage, snapshot, watched, caller, models, now)
    decision = router.route(requested, spec.dialect, caller, facts, used, per_model)
    return snapshot.models.resolve(decision.model, spec.dialect), decision


async def _used(
    storage: Storage,
    snapshot: Snapshot,
    names: tuple[str, ...],
    caller: Caller,
    models: tuple[str, ...],
    now: datetime,
) -> tuple[dict[str, int], dict[tuple[str, str], int]]:
    """How full each watched budget is for the caller; for a ``scope: model`` budget, for
    each of ``models`` (its member is the model a routing step examines: an alias's
    target, a rewrite's, a tier down), by (budget, model)."""
    book = snapshot.budgets
    refs: list[CounterRef] = []
    per_model: dict[tuple[str, str], int] = {}
    for name in names:
        budget = book.get(name)
        if budget is None:
            continue
        span = book.window(budget.period, now)
        if budget.target.scope is BudgetScope.MODEL:
            for model in models:
                if budget.target.members(dataclasses.replace(caller, model=model)):
                    per_model[(name, model)] = 0  # no counter yet: nothing used
                    refs.append(CounterRef(budget, model, span))
            continue
        refs.extend(CounterRef(budget, member, span) for member in budget.target.members(caller))
    used: dict[str, int] = {}
    for state in await storage.counter_states(tuple(refs), now):
        name = state.ref.budget.name
        if state.ref.budget.target.scope is BudgetScope.MODEL:
            per_model[(name, state.ref.member)] = state.used_bp
            continue
        used[name] = max(used.get(name, 0), state.used_bp)
    return used, per_model


def attempts(
    snapshot: Snapshot,
    rng: random.Random,
    route: ModelRoute,
    key: ApiKey,
    *,
    asked: str,
    needs_price: bool,
) -> list[Attempt]:
    """The model's deployments (one drawn by weight first), then each fallback model's. A
    fallback the key may not use, or that has no price, is left out of the chain. A key may
    use a model it is allowed, or one that routing chose for a name it is allowed (``asked``)."""
    table = snapshot.models
    price = table.authorize(route, key, needs_price=needs_price, asked=asked)
    providers = snapshot.providers
    chain = [Attempt(route, d, price, providers[d.provider]) for d in route.ordered(rng.random())]
    for name in route.fallbacks:
        fallback = table.get(name)
        if fallback is None:
            continue
        try:
            # A fallback is the operator's choice, not the caller's: the key itself must
            # be allowed it (the name the client sent does not lend its permission).
            fallback_price = table.authorize(fallback, key, needs_price=needs_price)
        except GatewayError:
            continue
        chain.extend(
            Attempt(fallback, d, fallback_price, providers[d.provider])
            for d in fallback.ordered(rng.random())
        )
    return chain


def price_of(snapshot: Snapshot, model: str | None, served: ModelRoute) -> Price | None:
    """The price of another model, for a counterfactual cost (None when it is the served
    one, or has no price)."""
    if model is None or model == served.name:
        return None
    route = snapshot.models.get(model)
    return route.price if route is not None else None
