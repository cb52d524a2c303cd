"""The gateway's state, on one object built by `build_gateway`: no module globals."""

from __future__ import annotations

import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp

from spendgate.clock import Clock, SystemClock
from spendgate.config.schema import Config
from spendgate.domain.breaker import CircuitBreakers
from spendgate.domain.budgets import BudgetBook
from spendgate.domain.models import ModelTable, build_model_table
from spendgate.domain.pricing import PriceBook
from spendgate.domain.routing import Router
from spendgate.pipeline.budgeting import LeaseKeeper
from spendgate.pricing.catalog import build_price_book
from spendgate.services.budgets import BudgetService
from spendgate.services.keys import KeyService
from spendgate.storage.base import Storage
from spendgate.storage.open import open_storage
from spendgate.upstream.providers import Provider, build_providers


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
    http: aiohttp.ClientSession | None = None
    draining: bool = False
    inflight: int = 0

    async def start(self) -> None:
        """Open storage, settle leases that lapsed while no gateway ran, start pooling."""
        await self.storage.open()
        if self.budgets:
            self.lease_keeper = LeaseKeeper(
                self.storage, self.owner, self.lease, self.clock, self.budgets
            )
            await self.lease_keeper.tick()
            self.lease_keeper.start()
        server = self.config.server
        self.http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(
                total=None,
                connect=server.upstream_connect_timeout_s,
                sock_read=server.upstream_timeout_s,
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def stop(self) -> None:
        """Close upstream connections, then flush and close storage."""
        if self.http is not None:
            await self.http.close()
            self.http = None
        if self.lease_keeper is not None:
            await self.lease_keeper.stop()
            self.lease_keeper = None
        await self.storage.close()

    @property
    def budget_service(self) -> BudgetService:
        return BudgetService(self.storage, self.budgets, self.clock)

    @property
    def lease(self) -> timedelta:
        return timedelta(seconds=self.config.budget_settings.lease_ttl_s)

    def session(self) -> aiohttp.ClientSession:
        if self.http is None:
            raise RuntimeError("the gateway has not been started")
        return self.http


def _breakers(config: Config) -> CircuitBreakers | None:
    runaway = config.runaway
    if runaway.breaker_failures <= 0:
        return None
    return CircuitBreakers(runaway.breaker_failures, runaway.breaker_cooldown_s)


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
    prices = build_price_book(config, env_base_dir=base_dir, source=source)
    models = build_model_table(config, prices)
    budgets = BudgetBook.from_config(config)
    return Gateway(
        config=config,
        config_source=source,
        clock=clock,
        storage=storage,
        prices=prices,
        models=models,
        providers=build_providers(config, env, source, require_secrets=require_secrets),
        keys=KeyService(storage, config, clock),
        budgets=budgets,
        router=Router.from_config(config, models, budgets),
        breakers=_breakers(config),
        admin_token=env.get(config.server.admin_token_env) or None,
    )
