"""The gateway's state, on one object built by `build_gateway`: no module globals.

`Gateway.reload` swaps in what a new config builds (prices, models, budgets, routing
rules, providers) without a restart; requests in flight keep what they already resolved.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from spendgate.clock import Clock, SystemClock
from spendgate.config import load_config
from spendgate.config.build import (
    build_budget_book,
    build_model_table,
    build_router,
    price_problem,
)
from spendgate.config.schema import Config
from spendgate.domain.breaker import CircuitBreakers
from spendgate.domain.budgets import BudgetBook
from spendgate.domain.models import ModelTable
from spendgate.domain.pricing import PriceBook
from spendgate.domain.routing import Router
from spendgate.errors import ConfigError, ServiceUnavailable
from spendgate.pricing.catalog import build_price_book
from spendgate.services.budgets import BudgetService
from spendgate.services.keys import KeyService
from spendgate.services.leases import LeaseKeeper
from spendgate.storage import Storage
from spendgate.storage.open import open_storage
from spendgate.upstream.client import UpstreamClient
from spendgate.upstream.providers import Provider, build_providers

log = logging.getLogger("spendgate.reload")

# Sections a running gateway cannot take on: the listening socket, the upstream connection
# pool's timeouts, the admin token and the database are set up once, at start.
RESTART_ONLY = ("server", "storage")


@dataclass(frozen=True, slots=True)
class ReloadResult:
    """What a reload put in force (counts only: never a value from the config)."""

    source: str
    models: int
    rules: int
    budgets: int
    limits: int
    providers: int
    changed: tuple[str, ...]  # top-level config sections that differ from before

    def to_json(self) -> dict[str, object]:
        return {
            "reloaded": True,
            "source": self.source,
            "models": self.models,
            "rules": self.rules,
            "budgets": self.budgets,
            "limits": self.limits,
            "providers": self.providers,
            "changed": list(self.changed),
        }


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything a config builds that requests read: made whole before anything changes
    (serve, reload, and check-config, which builds them to find what serve would refuse)."""

    prices: PriceBook
    models: ModelTable
    budgets: BudgetBook
    router: Router
    providers: dict[str, Provider]
    breakers: CircuitBreakers | None


def build_parts(
    config: Config,
    *,
    source: str,
    env: Mapping[str, str],
    require_secrets: bool,
    base_dir: Path | None,
) -> Parts:
    prices = build_price_book(config, env_base_dir=base_dir, source=source)
    models = build_model_table(config, prices)
    problem = price_problem(config, models)
    if problem is not None:
        raise ConfigError(source, *problem)
    budgets = build_budget_book(config)
    return Parts(
        prices=prices,
        models=models,
        budgets=budgets,
        router=build_router(config, models, budgets),
        providers=build_providers(config, env, source, require_secrets=require_secrets),
        breakers=_breakers(config),
    )


@dataclass
class Gateway:
    config: Config
    config_source: str
    clock: Clock
    storage: Storage
    prices: PriceBook
    models: ModelTable
    providers: dict[str, Provider]
    keys: KeyService
    budgets: BudgetBook
    router: Router
    breakers: CircuitBreakers | None = None
    rng: random.Random = field(default_factory=random.Random)  # weighted balancing
    owner: str = field(default_factory=lambda: f"gw-{os.getpid()}-{os.urandom(4).hex()}")
    admin_token: str | None = field(repr=False, default=None)
    lease_keeper: LeaseKeeper | None = None
    upstream: UpstreamClient = field(init=False)
    draining: bool = False
    inflight: int = 0
    env: Mapping[str, str] = field(repr=False, default_factory=dict)  # provider secrets
    base_dir: Path | None = None  # resolves the config's relative paths
    require_secrets: bool = True
    _reloading: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, init=False)
    # One future per request answered before its ledger row was written, resolved once the
    # row is (`spendgate.pipeline.outcome.answer_and_record`); `settled` waits for them.
    unsettled: set[asyncio.Future[None]] = field(default_factory=set, repr=False, init=False)

    def __post_init__(self) -> None:
        server = self.config.server  # restart-only: the pool's timeouts never reload
        self.upstream = UpstreamClient(
            connect_timeout_s=server.upstream_connect_timeout_s,
            read_timeout_s=server.upstream_timeout_s,
        )

    async def start(self) -> None:
        """Open storage, settle leases that lapsed while no gateway ran, start pooling."""
        await self.storage.open()
        if self.budgets:
            self.lease_keeper = LeaseKeeper(
                self.storage, self.owner, self.lease, self.clock, self.budgets
            )
            await self.lease_keeper.tick()
            self.lease_keeper.start()
        await self.upstream.start()

    async def stop(self) -> None:
        """Close upstream connections, then flush and close storage (once every request
        answered has its row)."""
        await self.settled()
        await self.upstream.close()
        if self.lease_keeper is not None:
            await self.lease_keeper.stop()
            self.lease_keeper = None
        await self.storage.close()

    async def settled(self) -> None:
        """Wait until every request answered so far has its ledger row: what this process
        reports afterwards includes them (admin reads call this first)."""
        answered = list(self.unsettled)  # not those answered later: under steady load
        if answered:  # the set is never empty, and waiting for that would never end
            await asyncio.wait(answered)

    @property
    def budget_service(self) -> BudgetService:
        return BudgetService(self.storage, self.budgets, self.clock)

    @property
    def lease(self) -> timedelta:
        return self._lease_of(self.config)

    async def reload_source(self) -> ReloadResult:
        """Re-read the config file the gateway was started from and `reload` it."""
        source = self.config_source
        config = await asyncio.to_thread(load_config, source)
        base_dir = self.base_dir if self.base_dir is not None else Path(source).parent
        return await self.reload(config, env=self.env, base_dir=base_dir)

    async def reload(
        self,
        config: Config,
        *,
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
    ) -> ReloadResult:
        """Put ``config`` in force without dropping a request, or change nothing.

        Everything is built first (off the event loop); any problem raises `ConfigError`
        and the running config stays. Then the new parts replace the old in one
        synchronous step, so a request sees all old or all new. A request in flight keeps
        the route, deployment and prices it already resolved, and its reservation settles
        against the counters it reserved on. ``server.*`` and ``storage.*`` are refused:
        they take a restart.
        """
        async with self._reloading:  # one at a time: the last one asked for wins
            return await self._reload(config, env=env, base_dir=base_dir)

    async def _reload(
        self, config: Config, *, env: Mapping[str, str] | None, base_dir: Path | None
    ) -> ReloadResult:
        self._refuse_while_draining()
        source = self.config_source
        _refuse_restart_only(self.config, config, source)
        env = self.env if env is None else env
        base_dir = self.base_dir if base_dir is None else base_dir
        built = await asyncio.to_thread(
            build_parts,
            config,
            source=source,
            env=env,
            require_secrets=self.require_secrets,
            base_dir=base_dir,
        )
        self._refuse_while_draining()  # it may have begun while the parts were built
        changed = tuple(
            name
            for name in Config.model_fields
            if getattr(self.config, name) != getattr(config, name)
        )
        breakers = self.breakers
        if config.runaway.breaker_failures != self.config.runaway.breaker_failures or (
            config.runaway.breaker_cooldown_s != self.config.runaway.breaker_cooldown_s
        ):
            breakers = built.breakers  # else open circuits stay open
        old_keeper = self.lease_keeper
        keeper = old_keeper
        if self.upstream.started and (old_keeper is not None or built.budgets):
            keeper = LeaseKeeper(
                self.storage, self.owner, self._lease_of(config), self.clock, built.budgets
            )
        # The swap: no await from here to the end of the block.
        self.config = config
        self.env = env
        self.base_dir = base_dir
        self.prices = built.prices
        self.models = built.models
        self.budgets = built.budgets
        self.router = built.router
        self.providers = built.providers  # attempts resolved earlier keep their Provider
        self.breakers = breakers
        self.keys = KeyService(self.storage, config, self.clock)
        self.lease_keeper = keeper
        if keeper is not old_keeper:
            assert keeper is not None
            keeper.start()
            if old_keeper is not None:
                await old_keeper.stop()
        result = ReloadResult(
            source=source,
            models=len(built.models),
            rules=len(config.routing.rules),
            budgets=len(config.budgets),
            limits=len(config.limits),
            providers=len(built.providers),
            changed=changed,
        )
        log.info(
            "config reloaded", extra={k: v for k, v in result.to_json().items() if k != "reloaded"}
        )
        return result

    def _refuse_while_draining(self) -> None:
        if self.draining:
            raise ServiceUnavailable("spendgate is shutting down; the config was not reloaded.")

    @staticmethod
    def _lease_of(config: Config) -> timedelta:
        return timedelta(seconds=config.budget_settings.lease_ttl_s)


def _breakers(config: Config) -> CircuitBreakers | None:
    runaway = config.runaway
    if runaway.breaker_failures <= 0:
        return None
    return CircuitBreakers(runaway.breaker_failures, runaway.breaker_cooldown_s)


def _refuse_restart_only(old: Config, new: Config, source: str) -> None:
    for section in RESTART_ONLY:
        before, after = getattr(old, section), getattr(new, section)
        if before == after:
            continue
        key = next(
            (
                f"{section}.{name}"
                for name in type(before).model_fields
                if getattr(before, name) != getattr(after, name)
            ),
            section,
        )
        raise ConfigError(
            source,
            key,
            "cannot change while spendgate runs; restart spendgate to apply it",
        )


def build_gateway(
    config: Config,
    *,
    source: str = "<config>",
    env: Mapping[str, str],
    clock: Clock | None = None,
    storage: Storage | None = None,
    require_secrets: bool = True,
    base_dir: Path | None = None,
) -> Gateway:
    """``base_dir`` resolves relative paths in the config (LiteLLM price files)."""
    clock = clock or SystemClock()
    storage = storage or open_storage(config.storage.url, clock=clock)
    built = build_parts(
        config, source=source, env=env, require_secrets=require_secrets, base_dir=base_dir
    )
    return Gateway(
        config=config,
        config_source=source,
        clock=clock,
        storage=storage,
        prices=built.prices,
        models=built.models,
        providers=built.providers,
        keys=KeyService(storage, config, clock),
        budgets=built.budgets,
        router=built.router,
        breakers=built.breakers,
        admin_token=env.get(config.server.admin_token_env) or None,
        env=env,
        base_dir=base_dir,
        require_secrets=require_secrets,
    )
