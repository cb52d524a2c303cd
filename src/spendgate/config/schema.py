"""The config file's schema. Unknown keys are errors; secrets appear only as env var names."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, field_validator, model_validator

from spendgate.config.alerts import AlertsConfig
from spendgate.config.budgets import BudgetConfig, BudgetSpec, Listed
from spendgate.config.metrics import MetricsConfig
from spendgate.config.patterns import ENV_NAME, NAME
from spendgate.config.storage import StorageConfig, Strict
from spendgate.config.telemetry import TelemetryConfig
from spendgate.domain.budgets import BudgetScope, Unit
from spendgate.domain.models import ProviderKind, dialect_of_provider
from spendgate.domain.rates import Rate, parse_rates
from spendgate.domain.routing import RouteKind

__all__ = [
    "BudgetConfig",
    "BudgetScope",
    "BudgetSpec",
    "Config",
    "ProviderKind",
    "RouteKind",
    "StorageConfig",
    "Strict",
]


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8700
    max_body_bytes: Annotated[int, Field(gt=0)] = 20 * 1024 * 1024
    # A request body may nest JSON this deep (orjson cannot write more than 255 levels)...
    max_json_depth: Annotated[int, Field(ge=2, le=250)] = 128
    # ... and hold this many JSON objects and arrays (each costs parsing time on the loop).
    max_json_containers: Annotated[int, Field(ge=1)] = 50_000
    admin_token_env: Annotated[str, Field(pattern=ENV_NAME)] = "SPENDGATE_ADMIN_TOKEN"  # noqa: S105
    metrics_public: bool = False  # GET /metrics without the admin token
    metrics: bool = True  # count the outcome events for GET /metrics (false: 404, no counting)
    upstream_timeout_s: Annotated[float, Field(gt=0)] = 600.0
    upstream_connect_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    drain_timeout_s: Annotated[float, Field(ge=0)] = 30.0
    workers: Annotated[int, Field(ge=1, le=256)] = 1  # processes on the port (docs/deploy.md)
    # Bounds on client connections and on one provider event (docs/configuration.md).
    request_header_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    request_body_timeout_s: Annotated[float, Field(gt=0)] = 60.0
    client_send_timeout_s: Annotated[float, Field(gt=0)] = 60.0  # a client that stops reading
    keepalive_timeout_s: Annotated[float, Field(gt=0)] = 75.0
    max_connections_per_address: Annotated[int, Field(ge=1)] = 1024
    max_upstream_event_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024 * 1024
    log_level: str = "info"

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        allowed = {"debug", "info", "warning", "error"}
        if value.lower() not in allowed:
            raise ValueError(f"must be one of {sorted(allowed)}")
        return value.lower()


class AuthScheme(StrEnum):
    """Which header carries a provider's secret (``providers.*.auth``)."""

    BEARER = "bearer"  # Authorization: Bearer <secret> (OpenAI and compatible servers)
    X_API_KEY = "x-api-key"  # Anthropic
    API_KEY = "api-key"  # Azure OpenAI
    X_GOOG_API_KEY = "x-goog-api-key"  # Gemini


class ProviderConfig(Strict):
    kind: ProviderKind
    base_url: str
    api_key_env: Annotated[str | None, Field(pattern=ENV_NAME)] = None
    auth: AuthScheme | None = None  # None: the kind's own (docs/configuration.md)
    headers: dict[str, str] = Field(default_factory=dict)
    # The tier a request that chooses none (OpenAI "auto") runs in on this account, e.g. priority
    default_service_tier: Annotated[str | None, Field(pattern=r"^[a-z_]+$")] = None
    # Azure OpenAI deployment URLs: {base_url}/deployments/{upstream model}/...?api-version=this
    api_version: Annotated[str | None, Field(pattern=r"^[A-Za-z0-9._-]+$")] = None

    @model_validator(mode="after")
    def _api_version_openai_only(self) -> ProviderConfig:
        if self.api_version is not None and dialect_of_provider(self.kind).value != "openai":
            raise ValueError("api_version (Azure OpenAI deployment URLs) needs an OpenAI kind")
        return self

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class RatesConfig(Strict):
    """Dollars per million tokens, written as numbers or strings ("0.15")."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    audio_input: Decimal | None = None

    @model_validator(mode="after")
    def _non_negative(self) -> RatesConfig:
        for name, value in self:
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative")
        return self


class TierConfig(Strict):
    above_input_tokens: Annotated[int, Field(gt=0)]
    rates: RatesConfig


RATE_KEYS = (
    "input",
    "output",
    "cached_input",
    "cache_write",
    "cache_write_1h",
    "reasoning",
    "audio_input",
)


def _negative_rate(block: BaseModel) -> str | None:
    for name in RATE_KEYS:
        value = getattr(block, name)
        if value is not None and value < 0:
            return f"{name} must not be negative"
    return None


def _multiplier_shorthand(value: object) -> object:
    """``priority: "2"`` is shorthand for ``priority: {multiplier: "2"}``."""
    if isinstance(value, str | int | float | Decimal) and not isinstance(value, bool):
        return {"multiplier": value}
    return value


class ServiceTierConfig(Strict):
    """One service tier's prices: ``multiplier`` times the standard rates (their long-context
    tiers included), or rates of its own (``input`` and ``output`` at least, and its own
    ``tiers``), in dollars per million tokens."""

    multiplier: Annotated[Decimal | None, Field(gt=0)] = None
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    audio_input: Decimal | None = None
    tiers: list[TierConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _one_way(self) -> ServiceTierConfig:
        own = [name for name in RATE_KEYS if getattr(self, name) is not None]
        if self.multiplier is not None and (own or self.tiers):
            raise ValueError("give a multiplier or rates of its own, not both")
        if self.multiplier is None and (self.input is None or self.output is None):
            raise ValueError(
                'give a multiplier (e.g. "2") or rates of its own with input and output'
            )
        problem = _negative_rate(self)
        if problem:
            raise ValueError(problem)
        return self


TierPrice = Annotated[ServiceTierConfig | None, BeforeValidator(_multiplier_shorthand)]


class ServiceTiersConfig(Strict):
    """Prices per service tier, by the name the provider reports (`domain.pricing.SERVICE_TIERS`).
    A tier left out keeps the price it has in the layer below (or the standard rates);
    ``null`` removes it: the standard rates apply."""

    priority: TierPrice = None
    fast: TierPrice = None
    ultrafast: TierPrice = None
    flex: TierPrice = None
    batch: TierPrice = None
    scale: TierPrice = None

    def stated(self) -> dict[str, ServiceTierConfig | None]:
        """The tiers this block names, ``null`` ones included (as None)."""
        return {name: getattr(self, name) for name in self.model_fields_set}


PerCall = Annotated[Decimal | None, Field(ge=0)]


class ToolFeesConfig(Strict):
    """Dollars per call of the tools billed per call (`domain.pricing.TOOLS`). A tool left
    out keeps the fee it has in the layer below (or none)."""

    web_search: PerCall = None
    web_search_preview: PerCall = None
    web_fetch: PerCall = None
    file_search: PerCall = None
    code_execution: PerCall = None
    image_generation: PerCall = None

    def stated(self) -> dict[str, Decimal]:
        return {
            name: getattr(self, name)
            for name in self.model_fields_set
            if getattr(self, name) is not None
        }


class PriceConfig(Strict):
    input: Decimal | None = None
    output: Decimal | None = None
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    cache_write_1h: Decimal | None = None
    reasoning: Decimal | None = None
    audio_input: Decimal | None = None
    tiers: list[TierConfig] = Field(default_factory=list)
    service_tiers: ServiceTiersConfig = Field(default_factory=ServiceTiersConfig)
    tool_fees: ToolFeesConfig = Field(default_factory=ToolFeesConfig)
    free: bool = False
    max_output_tokens: Annotated[int | None, Field(gt=0)] = None
    max_input_tokens: Annotated[int | None, Field(gt=0)] = None

    @model_validator(mode="after")
    def _complete(self) -> PriceConfig:
        problem = _negative_rate(self)
        if problem:
            raise ValueError(problem)
        if not self.free and (self.input is None or self.output is None):
            raise ValueError(
                "a price needs both input and output (dollars per 1M tokens) or free: true"
            )
        if self.free and (self.service_tiers.stated() or self.tool_fees.stated()):
            raise ValueError("a free price takes no service_tiers or tool_fees")
        return self


class DeploymentConfig(Strict):
    provider: str
    model: str | None = None  # name sent upstream; defaults to the model's own name
    weight: Annotated[int, Field(ge=0)] = 1  # share of traffic among the model's deployments


class ModelConfig(Strict):
    provider: str | None = None
    upstream_model: str | None = None
    deployments: list[DeploymentConfig] = Field(default_factory=list)
    price: PriceConfig | None = None
    max_output_tokens: Annotated[int | None, Field(gt=0)] = None
    fallbacks: list[str] = Field(default_factory=list)  # other models, tried in order

    @model_validator(mode="after")
    def _one_way(self) -> ModelConfig:
        if self.provider and self.deployments:
            raise ValueError("give either provider (one deployment) or deployments, not both")
        if not self.provider and not self.deployments:
            raise ValueError("needs a provider or a list of deployments")
        return self

    def resolved_deployments(self, name: str) -> list[DeploymentConfig]:
        if self.provider:
            return [DeploymentConfig(provider=self.provider, model=self.upstream_model or name)]
        return [
            DeploymentConfig(provider=d.provider, model=d.model or name, weight=d.weight)
            for d in self.deployments
        ]


class PricingConfig(Strict):
    builtin_catalog: bool = True
    litellm_files: list[str] = Field(default_factory=list)
    overrides: dict[str, PriceConfig] = Field(default_factory=dict)


class OrgConfig(Strict):
    teams: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list)


class RequestCapConfig(Strict):
    """Limits on ONE request (the single huge prompt), for callers in a scope."""

    scope: BudgetScope
    match: Annotated[str, Field(min_length=1)] = "*"
    models: list[str] = Field(default_factory=list)
    max_input_tokens: Annotated[int | None, Field(gt=0)] = None
    max_request_usd: Decimal | None = None

    @model_validator(mode="after")
    def _something(self) -> RequestCapConfig:
        if self.max_input_tokens is None and self.max_request_usd is None:
            raise ValueError("give max_input_tokens, max_request_usd or both")
        if self.max_request_usd is not None and self.max_request_usd <= 0:
            raise ValueError("max_request_usd must be positive")
        return self


class Weekday(StrEnum):
    MONDAY = "monday"
    TUESDAY = "tuesday"
    WEDNESDAY = "wednesday"
    THURSDAY = "thursday"
    FRIDAY = "friday"
    SATURDAY = "saturday"
    SUNDAY = "sunday"


class BudgetSettingsConfig(Strict):
    timezone: str = "UTC"
    week_start: Weekday = Weekday.MONDAY
    month_start_day: Annotated[int, Field(ge=1, le=28)] = 1
    min_output_tokens: Annotated[int, Field(ge=1)] = 256
    default_max_output_tokens: Annotated[int, Field(ge=1)] = 16_384
    lease_ttl_s: Annotated[float, Field(ge=1)] = 120.0
    # Server tool calls assumed for a tool whose request sets no limit (max_uses,
    # max_tool_calls): each is one more model pass over the whole context.
    assumed_tool_calls: Annotated[int, Field(ge=1)] = 10
    # A request a budget could afford but for requests in flight waits this long for them
    # to settle (0: refuse at once), in a line of at most admission_queue_max per member.
    admission_wait_s: Annotated[float, Field(ge=0, le=60)] = 5.0
    admission_queue_max: Annotated[int, Field(ge=1)] = 64
    # A body smaller than this is counted before admission and holds its exact count while
    # in flight; any other is priced by its byte bound first (docs/budgets.md). 0: every body.
    count_below_bytes: Annotated[int, Field(ge=0)] = 0

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
            ) from None
        return value


class LimitConfig(Strict):
    """Rate limits on one scope, checked in the same step as budgets. See docs/limits.md."""

    name: Annotated[str, Field(pattern=NAME)]
    scope: BudgetScope
    match: Annotated[str, Field(min_length=1)] = "*"
    models: list[str] = Field(default_factory=list)
    requests: str | None = None  # "600/minute; 20000/day"
    tokens: str | None = None  # "200000/minute": worst case reserved, actual settled
    usd: str | None = None  # "5/minute; 50/hour": spend velocity
    concurrency: Annotated[int | None, Field(gt=0)] = None  # requests in flight at once
    shadow: bool = False  # count and report, never block

    @field_validator("requests", "tokens")
    @classmethod
    def _whole_rates(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rates(value, whole=True)
        return value

    @field_validator("usd")
    @classmethod
    def _dollar_rates(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rates(value, whole=False)
        return value

    @model_validator(mode="after")
    def _something(self) -> LimitConfig:
        if not (self.requests or self.tokens or self.usd or self.concurrency):
            raise ValueError("give at least one of requests, tokens, usd or concurrency")
        return self

    def rates(self) -> list[tuple[str, Unit, Rate]]:
        """Each rate with its counter's name suffix (``requests/minute``), in order."""
        return [
            (f"{unit.value}/{rate.text.split('/', 1)[1].strip()}", unit, rate)
            for text, unit, whole in (
                (self.requests, Unit.REQUESTS, True),
                (self.tokens, Unit.TOKENS, True),
                (self.usd, Unit.NANOS, False),
            )
            for rate in (parse_rates(text, whole=whole) if text else ())
        ]

    def counter_names(self) -> list[str]:
        """The names of its counters: ``<name>:requests/minute``, ``<name>:concurrency``."""
        suffixes = [suffix for suffix, _, _ in self.rates()]
        suffixes += ["concurrency"] if self.concurrency else []
        return [f"{self.name}:{suffix}" for suffix in suffixes]


class RunawayConfig(Strict):
    """Protection against loops, failing upstreams and retry storms. See docs/limits.md."""

    loop_max_repeats: Annotated[int, Field(ge=0)] = 0  # 0: loop detection off
    loop_window_s: Annotated[float, Field(gt=0)] = 60.0
    # A detected loop's first block (None: loop_window_s), doubling per repeat detection up
    # to the max (None: 3600, or the first if longer); strikes forgotten after
    # loop_forget_s quiet (None: the max).
    loop_cooldown_s: Annotated[float | None, Field(gt=0)] = None
    loop_cooldown_max_s: Annotated[float | None, Field(gt=0)] = None
    loop_forget_s: Annotated[float | None, Field(ge=0)] = None
    loop_escalate_after: Annotated[int, Field(ge=0)] = 0  # loops that block their key (0: off)
    breaker_failures: Annotated[int, Field(ge=0)] = 0  # 0: circuit breaker off
    breaker_cooldown_s: Annotated[float, Field(gt=0)] = 30.0
    session_headers: list[str] = Field(
        default_factory=lambda: ["x-spendgate-session", "x-claude-code-session-id", "session-id"]
    )

    @model_validator(mode="after")
    def _cooldowns(self) -> RunawayConfig:
        first = self.loop_cooldown_s or self.loop_window_s
        if self.loop_cooldown_max_s is not None and self.loop_cooldown_max_s < first:
            raise ValueError(
                f"loop_cooldown_max_s ({self.loop_cooldown_max_s:g}) is shorter than the first "
                f"cool-down ({first:g} s: loop_cooldown_s, else loop_window_s)"
            )
        return self


class RouteRuleConfig(Strict):
    """One routing rule. See docs/routing.md."""

    name: Annotated[str, Field(pattern=NAME)]
    kind: RouteKind
    scope: BudgetScope | None = None  # None: every caller
    match: Annotated[str, Field(min_length=1)] = "*"
    alias: Annotated[str | None, Field(pattern=NAME)] = None  # alias: the name clients send
    models: list[str] = Field(default_factory=list)  # requested-model patterns (empty: any)
    to: str | None = None  # alias, rewrite: the model that serves (a downgrade has none)
    budget: str | None = None  # downgrade: the budget whose use triggers it
    at: Annotated[Decimal | None, Field(gt=0, le=1)] = None  # downgrade: share of it used
    shadow: bool = False  # decide and record, but serve the request unchanged

    @model_validator(mode="after")
    def _shape(self) -> RouteRuleConfig:
        problem = self._problem()
        if problem:
            raise ValueError(f"rule {self.name!r}: {problem}")
        return self

    def _problem(self) -> str | None:
        if self.kind is RouteKind.ALIAS:
            if not self.alias or not self.to:
                return "an alias rule needs alias (the name clients send) and to"
            if self.models or self.budget or self.at is not None:
                return "an alias rule takes alias and to, not models, budget or at"
        elif self.kind is RouteKind.REWRITE:
            if not self.models or not self.to:
                return "a rewrite rule needs models (patterns) and to"
            if self.alias or self.budget or self.at is not None:
                return "a rewrite rule takes models and to, not alias, budget or at"
        else:
            if not self.budget:
                return "a downgrade rule needs budget (the budget whose use triggers it)"
            if self.alias or self.to:
                return "a downgrade rule follows routing.tiers; it takes no alias or to"
        return None


class PremiumConfig(Strict):
    """Where the premium models stay available although a rewrite rule would move them."""

    models: list[str] = Field(default_factory=list)  # patterns: what counts as premium
    keys: list[str] = Field(default_factory=list)  # key ids always allowed premium
    users: list[str] = Field(default_factory=list)
    header: Annotated[str, Field(pattern=r"^[A-Za-z0-9-]+$")] = "x-spendgate-premium"
    allowance_budget: str | None = None  # opt-in honoured while this budget has room
    min_input_tokens: Annotated[int | None, Field(gt=0)] = None  # big prompts keep premium
    with_tools: bool = False  # requests that carry tools keep premium
    tags: list[str] = Field(default_factory=list)  # keys with one of these tags keep premium


class RoutingConfig(Strict):
    tiers: dict[str, str] = Field(default_factory=dict)  # model -> the next cheaper model
    premium: PremiumConfig = Field(default_factory=PremiumConfig)
    rules: list[RouteRuleConfig] = Field(default_factory=list)


class Config(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    providers: dict[Annotated[str, Field(pattern=NAME)], ProviderConfig] = Field(
        default_factory=dict
    )
    models: dict[Annotated[str, Field(pattern=NAME)], ModelConfig] = Field(default_factory=dict)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    orgs: dict[Annotated[str, Field(pattern=NAME)], OrgConfig] = Field(default_factory=dict)
    budgets: Listed = ()  # config/budgets.py: validated for size (100,000 listed)
    budgets_file: str | None = None  # more budgets, one a CSV row (config/budget_file.py)
    request_caps: list[RequestCapConfig] = Field(default_factory=list)
    budget_settings: BudgetSettingsConfig = Field(default_factory=BudgetSettingsConfig)
    limits: list[LimitConfig] = Field(default_factory=list)
    runaway: RunawayConfig = Field(default_factory=RunawayConfig)
    routing: RoutingConfig = Field(default_factory=RoutingConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)  # config/telemetry.py
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)  # config/metrics.py

    @model_validator(mode="after")
    def _references(self) -> Config:
        for name, model in self.models.items():
            for deployment in model.resolved_deployments(name):
                if deployment.provider not in self.providers:
                    known = ", ".join(sorted(self.providers)) or "none"
                    raise ValueError(
                        f"models.{name}: provider {deployment.provider!r} is not declared "
                        f"under providers (declared: {known})"
                    )
            kinds = {self.providers[d.provider].kind for d in model.resolved_deployments(name)}
            if len(dialects := sorted({dialect_of_provider(k).value for k in kinds})) > 1:
                shown = " and ".join(dialects)
                raise ValueError(f"models.{name}: deployments mix {shown}-shaped providers")
        self._unique_names()
        seen: dict[str, str] = {}
        for org, spec in self.orgs.items():
            for team in spec.teams:
                if team in seen:
                    raise ValueError(
                        f"orgs.{org}.teams: team {team!r} already belongs to org {seen[team]!r}"
                    )
                seen[team] = org
        from spendgate.config.checks import check_whole_config

        check_whole_config(self)
        return self

    def _unique_names(self) -> None:
        names = [budget.name for budget in self.budgets] + [lim.name for lim in self.limits]
        self._no_counter_clash(names)
        if len(set(names)) == len(names):  # the common case, in one pass (100,000 budgets)
            return
        wheres = [f"budgets[{i}].name" for i in range(len(self.budgets))]
        wheres += [f"limits[{i}].name" for i in range(len(self.limits))]
        named: dict[str, str] = {}
        for where, entry in zip(wheres, names, strict=True):
            if entry in named:
                raise ValueError(
                    f"{where}: duplicate name {entry!r}, already used by "
                    f"{named[entry]} (budget and limit names share one namespace)"
                )
            named[entry] = where

    def _no_counter_clash(self, names: list[str]) -> None:
        """A name must not be one a limit's counter or a key's own budget goes by: both
        would share that counter's rows (members, spend, overrides) with it."""
        from spendgate.domain.key_limits import KEY_BUDGET_PREFIX

        counters = {
            counter: f"limits[{i}]"
            for i, spec in enumerate(self.limits)
            for counter in spec.counter_names()
        }
        wheres = len(self.budgets)
        for index, entry in enumerate(names):
            where = f"budgets[{index}]" if index < wheres else f"limits[{index - wheres}]"
            if entry.startswith(KEY_BUDGET_PREFIX):
                raise ValueError(
                    f"{where}.name: {entry!r} starts with {KEY_BUDGET_PREFIX!r}, which names "
                    "a key's own budget and limits (key:<id>): choose another name"
                )
            if entry in counters:
                raise ValueError(
                    f"{where}.name: {entry!r} is the name of a counter of {counters[entry]} "
                    "(a limit's rates are named <name>:<unit>/<period>, "
                    "<name>:concurrency): choose another name"
                )

    def dialect_of(self, model: str) -> str:
        """The API dialect ("openai", "anthropic", "gemini") a declared model is served in."""
        provider = self.models[model].resolved_deployments(model)[0].provider
        return dialect_of_provider(self.providers[provider].kind).value

    def org_of_team(self, team: str | None) -> str | None:
        if team is None:
            return None
        for org, spec in self.orgs.items():
            if team in spec.teams:
                return org
        return None

    def all_teams(self) -> set[str]:
        return {team for spec in self.orgs.values() for team in spec.teams}
