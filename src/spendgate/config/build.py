"""What a config builds for the pure core: budgets, limits and caps, the model table, the
router. The domain knows nothing of the config file; this module translates one into the
other (so the config layer depends on the domain, never the reverse)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from decimal import Decimal
from operator import attrgetter

from spendgate.config.budgets import BudgetConfig, BudgetSpec
from spendgate.config.schema import (
    Config,
    LimitConfig,
    PremiumConfig,
    RequestCapConfig,
    RouteRuleConfig,
    RunawayConfig,
)
from spendgate.domain.budget_list import BudgetList, Outline
from spendgate.domain.budgets import (
    BASIS_POINTS,
    Budget,
    BudgetBook,
    Kind,
    RequestCap,
    Scoped,
    Unit,
    limit_period,
    loop_detector,
)
from spendgate.domain.key_limits import KeyBudgetCache
from spendgate.domain.loops import LoopPolicy
from spendgate.domain.models import Deployment, ModelRoute, ModelTable, dialect_of_provider
from spendgate.domain.periods import Calendar, Period
from spendgate.domain.pricing import PriceBook
from spendgate.domain.routing import Premium, Router, Rule
from spendgate.money import dollars_to_nanos

# ---------------------------------------------------------------------------- budgets


def build_budget(
    spec: BudgetSpec | BudgetConfig,
    parent: BudgetSpec | BudgetConfig | None = None,
    shared: _Shared | None = None,
) -> Budget:
    """``parent``: the budget that a ``share_of`` budget takes its share of. ``shared``:
    the periods, thresholds and limits already built for earlier budgets (a config may
    list 100,000 budgets that differ only in name, member and limit)."""
    shared = shared if shared is not None else _Shared()
    source = parent if spec.share_of is not None and parent is not None else spec
    unit = Unit.NANOS if source.limit_usd is not None else Unit.TOKENS
    limit = shared.nanos(source.limit_usd) if source.limit_usd is not None else source.limit_tokens
    assert limit is not None
    if spec.share is not None:
        limit = int(limit * spec.share)
    return Budget(
        name=spec.name,
        target=Scoped(spec.scope, spec.match, tuple(spec.models)),
        unit=unit,
        limit=limit,
        period=shared.period(spec.period),
        hard=spec.hard,
        soft_bp=shared.thresholds(spec.soft_thresholds),
        hidden_input=spec.hidden_input,
    )


class _Shared:
    """Values many budgets of one config have in common, built once for all of them."""

    def __init__(self) -> None:
        self._periods: dict[str, Period] = {}
        self._thresholds: dict[tuple[Decimal, ...], tuple[int, ...]] = {}
        self._nanos: dict[Decimal, int] = {}

    def period(self, text: str) -> Period:
        found = self._periods.get(text)
        if found is None:
            found = self._periods[text] = Period.parse(text)
        return found

    def thresholds(self, given: Sequence[Decimal]) -> tuple[int, ...]:
        key = tuple(given)
        found = self._thresholds.get(key)
        if found is None:
            found = tuple(sorted(int(t * BASIS_POINTS) for t in given))
            self._thresholds[key] = found
        return found

    def nanos(self, dollars: Decimal) -> int:
        found = self._nanos.get(dollars)
        if found is None:
            found = self._nanos[dollars] = dollars_to_nanos(dollars)
        return found


def build_request_cap(spec: RequestCapConfig) -> RequestCap:
    return RequestCap(
        target=Scoped(spec.scope, spec.match, tuple(spec.models)),
        max_input_tokens=spec.max_input_tokens,
        max_request_nanos=(
            dollars_to_nanos(spec.max_request_usd) if spec.max_request_usd is not None else None
        ),
    )


def limits_from_config(spec: LimitConfig) -> list[Budget]:
    """One counter-backed budget per rate (and one for concurrency) of a limit entry."""
    target = Scoped(spec.scope, spec.match, tuple(spec.models))
    made: list[Budget] = []

    def add(suffix: str, unit: Unit, limit: int, period: Period) -> None:
        made.append(
            Budget(
                name=f"{spec.name}:{suffix}",
                target=target,
                unit=unit,
                limit=limit,
                period=period,
                hard=True,
                soft_bp=(),
                kind=Kind.LIMIT,
                shadow=spec.shadow,
            )
        )

    for suffix, unit, rate in spec.rates():  # named as `LimitConfig.counter_names` says
        whole = unit is not Unit.NANOS
        limit = int(rate.amount) if whole else dollars_to_nanos(rate.amount)
        add(suffix, unit, limit, limit_period(rate.period))
    if spec.concurrency:
        add("concurrency", Unit.CONCURRENT, spec.concurrency, Period("lifetime"))
    return made


def build_budget_book(config: Config) -> BudgetBook:
    settings = config.budget_settings
    runaway = config.runaway
    return BudgetBook(
        listed_budgets(config),
        [build_request_cap(spec) for spec in config.request_caps],
        Calendar.of(settings.timezone, settings.week_start.value, settings.month_start_day),
        loop_detector(runaway.loop_max_repeats, runaway.loop_window_s),
        loop_policy(runaway),
        per_key=KeyBudgetCache(),
    )


def listed_budgets(config: Config) -> BudgetList:
    """The config's budgets and rate limits, in that order; each budget built the first
    time the book is asked for it (`BudgetList`), the limits built now (they are few).
    What filing them needs is read from the specs column by column, in C where it can be:
    a config may list 100,000 budgets (docs/benchmarks.md, "Start-up")."""
    specs = config.budgets
    limits = [budget for spec in config.limits for budget in limits_from_config(spec)]
    shared = _Shared()
    texts = list(map(_PERIOD_TEXT, specs))
    periods = {text: shared.period(text) for text in set(texts)}
    # what building a budget converts, converted now: a budget built on first use then
    # does only what cannot fail (the specs were validated, their shares checked)
    for dollars in set(map(_LIMIT_USD, specs)) - {None}:
        shared.nanos(dollars)
    for given in set(map(_THRESHOLDS, specs)):
        shared.thresholds(given)
    counted = list(map(periods.__getitem__, texts))
    outline = Outline.of_targets(specs, specs, counted).extended(Outline.of(limits))
    shares = any(map(_SHARE_OF, specs))
    by_name = {spec.name: spec for spec in specs} if shares else {}
    count = len(specs)

    def build(position: int) -> Budget:
        if position >= count:
            return limits[position - count]
        spec = specs[position]
        return build_budget(spec, by_name.get(spec.share_of) if spec.share_of else None, shared)

    return BudgetList(outline, build)


_PERIOD_TEXT = attrgetter("period")
_SHARE_OF = attrgetter("share_of")
_LIMIT_USD = attrgetter("limit_usd")
_THRESHOLDS = attrgetter("soft_thresholds")


LOOP_COOLDOWN_MAX_S = 3600.0  # the longest loop block unless configured (or the first)


def loop_policy(runaway: RunawayConfig) -> LoopPolicy | None:
    """How long a detected loop stays blocked; None with loop detection off."""
    if runaway.loop_max_repeats <= 0:
        return None
    first = runaway.loop_cooldown_s or runaway.loop_window_s
    longest = runaway.loop_cooldown_max_s or max(LOOP_COOLDOWN_MAX_S, first)
    forget = longest if runaway.loop_forget_s is None else runaway.loop_forget_s
    return LoopPolicy(
        cooldown=timedelta(seconds=first),
        cooldown_max=timedelta(seconds=longest),
        forget_after=timedelta(seconds=forget),
        escalate_after=runaway.loop_escalate_after,
    )


# ---------------------------------------------------------------------------- models


def build_model_table(config: Config, prices: PriceBook) -> ModelTable:
    routes = []
    for name, spec in config.models.items():
        deployments = tuple(
            Deployment(provider=d.provider, upstream_model=d.model or name, weight=d.weight)
            for d in spec.resolved_deployments(name)
        )
        price = prices.get(name) or prices.get(deployments[0].upstream_model)
        max_output = spec.max_output_tokens or (price.max_output_tokens if price else None)
        routes.append(
            ModelRoute(
                name=name,
                dialect=dialect_of_provider(config.providers[deployments[0].provider].kind),
                deployments=deployments,
                price=price,
                max_output_tokens=max_output,
                fallbacks=tuple(spec.fallbacks),
            )
        )
    return ModelTable(routes)


# ---------------------------------------------------------------------------- routing


def build_rule(spec: RouteRuleConfig, book: BudgetBook) -> Rule:
    at = spec.at
    if at is None and spec.budget is not None:
        budget = book.get(spec.budget)
        soft = budget.soft_bp if budget is not None else ()
        at_bp = soft[0] if soft else BASIS_POINTS
    else:
        at_bp = int((at or Decimal(1)) * BASIS_POINTS)
    return Rule(
        name=spec.name,
        kind=spec.kind,
        who=Scoped(spec.scope, spec.match, ()) if spec.scope is not None else None,
        alias=spec.alias,
        models=tuple(spec.models),
        to=spec.to,
        budget=spec.budget,
        at_bp=at_bp,
        shadow=spec.shadow,
    )


def build_premium(spec: PremiumConfig) -> Premium:
    return Premium(
        models=tuple(spec.models),
        keys=frozenset(spec.keys),
        users=frozenset(spec.users),
        header=spec.header,
        allowance_budget=spec.allowance_budget,
        min_input_tokens=spec.min_input_tokens,
        with_tools=spec.with_tools,
        tags=frozenset(spec.tags),
    )


def build_router(config: Config, table: ModelTable, book: BudgetBook) -> Router:
    routing = config.routing
    rules = [build_rule(spec, book) for spec in routing.rules]
    return Router(rules, routing.tiers, table, build_premium(routing.premium))


def price_problem(config: Config, table: ModelTable) -> tuple[str, str] | None:
    """(key path, message) for the first model routing would send requests to that has no
    price, or a tier step that is not cheaper; None when there is none. Runs once the
    price book is built (load, reload, check-config), so such a rule fails there and not
    on every request it routes."""

    def unpriced(model: str) -> bool:
        route = table.get(model)
        return route is None or route.price is None

    for index, rule in enumerate(config.routing.rules):
        if rule.to is not None and unpriced(rule.to):
            return (
                f"routing.rules[{index}]",
                f"rule {rule.name!r} sends requests to model {rule.to!r}, which has no price "
                f"(price it under models.{rule.to}.price)",
            )
    for model, cheaper in config.routing.tiers.items():
        if unpriced(cheaper):
            return (
                f"routing.tiers.{model}",
                f"the tier below {model!r} is {cheaper!r}, which has no price",
            )
        here, below = table.get(model), table.get(cheaper)
        if here is not None and below is not None and here.price and below.price:
            high, low = here.price.rates, below.price.rates
            if low.input > high.input or low.output > high.output:
                return (
                    f"routing.tiers.{model}",
                    f"the tier below {model!r} is {cheaper!r}, which is not cheaper "
                    "(a downgrade must not raise the input or output price)",
                )
    for name, spec in config.models.items():
        for index, fallback in enumerate(spec.fallbacks):
            if unpriced(fallback):
                return (
                    f"models.{name}.fallbacks[{index}]",
                    f"the fallback {fallback!r} has no price",
                )
    return None
