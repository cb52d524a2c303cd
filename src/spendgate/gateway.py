"""The gateway's state, on one object built by `build_gateway`: no module globals.

What a config builds (prices, models, budgets, routing rules, providers, breakers) is one
immutable `Snapshot`; `Gateway.reload` swaps in a new one without a restart, and each
request reads the snapshot once, so requests in flight keep the one they started with.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spendgate.clock import Clock, SystemClock
from spendgate.config import load_config
from spendgate.config.build import (
    build_budget_book,
    build_model_table,
    build_router,
    price_problem,
)
from spendgate.config.schema import Config
from spendgate.domain.admission import Thresholds
from spendgate.domain.breaker import BreakerPolicy
from spendgate.domain.budgets import BudgetBook
from spendgate.domain.identity import ApiKey
from spendgate.domain.models import ModelTable
from spendgate.domain.pricing import PriceBook
from spendgate.domain.retries import SessionRetries
from spendgate.domain.roles import weak_admin_token
from spendgate.domain.routing import Router
from spendgate.errors import ConfigError, ServiceUnavailable, StorageError
from spendgate.events import Events
from spendgate.events.access_log import access_log
from spendgate.money import dollars_to_nanos
from spendgate.pricing.catalog import build_price_book
from spendgate.services.admission_queue import AdmissionQueue, FullLimits
from spendgate.services.alerts import Alerter
from spendgate.services.breakers import PRUNE_EVERY, SYNC_INTERVAL_S, CircuitBreakers
from spendgate.services.fleet import Fleet
from spendgate.services.idle import IdleRelease, release_memory
from spendgate.services.keys import KeyService
from spendgate.services.leases import LeaseKeeper
from spendgate.services.offload import Offload
from spendgate.services.outage import OutageAllowance
from spendgate.services.views import ServiceViews
from spendgate.storage import Storage
from spendgate.storage.open import open_storage
from spendgate.storage.spool import Spool
from spendgate.upstream.providers import Provider, build_providers

if TYPE_CHECKING:  # imported on first use: a CLI report never needs aiohttp
    from spendgate.upstream.client import UpstreamClient

log = logging.getLogger("spendgate.reload")

# Sections a running gateway cannot take on: the listening socket, the upstream connection
# pool's timeouts, the admin token, the database, the telemetry exporters and the metrics'
# labels and listener are set up once, at start.
RESTART_ONLY = ("server", "storage", "telemetry", "metrics")


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
class Snapshot:
    """Everything a config builds that requests read, made whole before anything changes
    (serve, reload, and check-config, which builds it to find what serve would refuse).
    A request reads the gateway's snapshot once and uses only that one: a reload while it
    waits cannot route it under the old rules and admit it under the new budgets."""

    config: Config
    prices: PriceBook
    models: ModelTable
    budgets: BudgetBook
    router: Router
    providers: Mapping[str, Provider]
    breakers: BreakerPolicy | None  # None: no circuit breakers

    def org_of(self, key: ApiKey) -> str | None:
        return self.config.org_of_team(key.team) or key.org


def build_parts(
    config: Config,
    *,
    source: str,
    env: Mapping[str, str],
    require_secrets: bool,
    base_dir: Path | None,
) -> Snapshot:
    prices = build_price_book(config, env_base_dir=base_dir, source=source)
    models = build_model_table(config, prices)
    problem = price_problem(config, models)
    if problem is not None:
        raise ConfigError(source, *problem)
    budgets = build_budget_book(config)
    return Snapshot(
        config=config,
        prices=prices,
        models=models,
        budgets=budgets,
        router=build_router(config, models, budgets),
        providers=build_providers(config, env, source, require_secrets=require_secrets),
        breakers=_breakers(config),
    )


class InFlight:
    """The proxied requests running now: counted for readiness and metrics, and their
    tasks kept so that shutdown can drain them (`spendgate.server`)."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()
        self._count = 0
        self.started = 0  # since the process began (`spendgate.services.idle`)

    def __len__(self) -> int:
        return self._count

    def enter(self, task: asyncio.Task[Any] | None) -> None:
        self._count += 1
        self.started += 1
        if task is not None:
            self.tasks.add(task)

    def leave(self, task: asyncio.Task[Any] | None) -> None:
        self._count -= 1
        if task is not None:
            self.tasks.discard(task)


class Gateway(ServiceViews):
    """The running gateway's state: the snapshot in force, storage, the upstream client,
    the event bus, the lease keeper and the requests in flight."""

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        config_source: str,
        clock: Clock,
        storage: Storage,
        admin_token: str | None = None,
        env: Mapping[str, str] | None = None,
        base_dir: Path | None = None,
        require_secrets: bool = True,
    ) -> None:
        self.snapshot = snapshot
        self.config_source = config_source
        self.clock = clock
        self.storage = storage
        self.keys = KeyService(storage, snapshot.config, clock)
        self.events = Events()
        self.events.subscribe(access_log)
        self.rng = random.Random()  # weighted balancing
        self.owner = f"gw-{os.getpid()}-{os.urandom(4).hex()}"
        self.admin_token = admin_token
        self.env: Mapping[str, str] = env or {}  # provider secrets
        self.base_dir = base_dir  # resolves the config's relative paths
        self.require_secrets = require_secrets
        self.lease_keeper: LeaseKeeper | None = None
        self.draining = False
        self.requests = InFlight()
        # memory a burst left behind, given back once the gateway goes idle
        self.idle = IdleRelease(lambda: release_memory(self.storage))
        # soft thresholds (and those alerts watch) seen crossed, told once a window
        self.thresholds = Thresholds(snapshot.config.alerts.thresholds_bp())
        self.alerter = Alerter(
            storage,
            snapshot.config.alerts,
            clock,
            self.owner,
            self.env,
            views=lambda: self.budget_service.overview(),
        )
        self.events.subscribe(self.alerter.inbox)  # queues only: sent in the background
        self.retries = SessionRetries()  # sessions whose last request failed (per process)
        settings = snapshot.config.budget_settings
        self.admission = AdmissionQueue(
            max_wait_s=settings.admission_wait_s, max_waiting=settings.admission_queue_max
        )
        self.full_limits = FullLimits()  # rate limits seen full, read before the body's work
        self.offload = Offload()  # a worker pool for large bodies, started on first use
        stored = snapshot.config.storage  # restart-only, as the storage itself
        self.spool = Spool(stored.spool_path(), self.owner)
        self.outage = OutageAllowance(dollars_to_nanos(str(stored.outage_allowance_usd)))
        self._upstream: UpstreamClient | None = None  # made on first use (`upstream`)
        self._reloading = asyncio.Lock()
        # One future per request answered before its ledger row was written, resolved once
        # the row is (`spendgate.pipeline.outcome.answer_and_record`); `settled` waits.
        self.unsettled: set[asyncio.Future[None]] = set()
        self.writing: set[asyncio.Future[None]] = set()  # those rows' writes, running
        self.fleet: Fleet | None = None  # the other workers of `serve --workers N`, if any
        # circuit breakers shared through the counter store, mirrored here
        self.breakers = self._circuit_breakers(snapshot)
        self._breaker_sync: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Gateway(source={self.config_source!r}, storage={self.storage!r})"

    @property
    def upstream(self) -> UpstreamClient:
        """The pool of upstream connections. Made on first use, so a gateway built for a
        CLI report never imports the HTTP client (aiohttp): docs/benchmarks.md, CLI start.
        Its timeouts are the config's at start: they never reload."""
        if self._upstream is None:
            from spendgate.upstream.client import UpstreamClient

            server = self.snapshot.config.server
            self._upstream = UpstreamClient(
                connect_timeout_s=server.upstream_connect_timeout_s,
                read_timeout_s=server.upstream_timeout_s,
            )
        return self._upstream

    # What the snapshot in force holds (for operator surfaces and tests; a request reads
    # `snapshot` once instead).
    @property
    def config(self) -> Config:
        return self.snapshot.config

    @property
    def prices(self) -> PriceBook:
        return self.snapshot.prices

    @property
    def models(self) -> ModelTable:
        return self.snapshot.models

    @property
    def budgets(self) -> BudgetBook:
        return self.snapshot.budgets

    @property
    def router(self) -> Router:
        return self.snapshot.router

    @property
    def providers(self) -> Mapping[str, Provider]:
        return self.snapshot.providers

    @property
    def inflight(self) -> int:
        return len(self.requests)

    async def start(self) -> None:
        """Open storage, settle leases that lapsed while no gateway ran, start pooling."""
        await self.storage.open()
        unwritable = self.spool.unwritable()
        if unwritable is not None:
            log.warning(
                "the spool directory cannot be written: rows storage refuses would wait in "
                "memory only; set storage.spool_dir to a writable local directory",
                extra={"path": str(self.spool.directory), "error": unwritable},
            )
        weak = weak_admin_token(self.admin_token, self.config.server.admin_token_env)
        if weak is not None:
            log.warning(weak)
        if self.spool.adopt():
            log.warning("rows of an earlier run wait in the spool", extra={"rows": len(self.spool)})
        self.lease_keeper = self._keeper(self.snapshot)
        await self.lease_keeper.tick()
        self.lease_keeper.start()
        await self.alerter.start()
        await self.upstream.start()
        self._breaker_sync = asyncio.get_running_loop().create_task(
            self._sync_breakers(), name="breaker-sync"
        )

    def _circuit_breakers(self, snapshot: Snapshot) -> CircuitBreakers | None:
        policy = snapshot.breakers
        return None if policy is None else CircuitBreakers(policy, self.storage, self.clock)

    async def _sync_breakers(self) -> None:
        """Every `SYNC_INTERVAL_S`: the breakers other processes opened (or closed); every
        `PRUNE_EVERY` turns, first drop those nothing failed on lately."""
        failing = False
        for turn in itertools.count(1):
            await asyncio.sleep(SYNC_INTERVAL_S)
            breakers = self.breakers
            if breakers is None:
                continue
            try:
                if turn % PRUNE_EVERY == 0:
                    await breakers.prune()
                await breakers.sync()
                failing = False
            except StorageError as exc:  # told once per outage
                if not failing:
                    log.warning("cannot read the circuit breakers", extra={"error": str(exc)})
                failing = True

    def _keeper(self, snapshot: Snapshot) -> LeaseKeeper:
        return LeaseKeeper(
            self.storage,
            self.owner,
            self._lease_of(snapshot.config),
            self.clock,
            snapshot.budgets,
            self.events,
            self.spool,
            idle=self._idle_tick,
        )

    async def _idle_tick(self) -> None:
        await self.idle.tick(self.requests.started, self.inflight)

    async def stop(self) -> None:
        """Close upstream connections, then flush and close storage (once every request
        answered has its row)."""
        await self.settled()
        if self._breaker_sync is not None:
            self._breaker_sync.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._breaker_sync
            self._breaker_sync = None
        if self._upstream is not None:
            await self._upstream.close()
        if self.lease_keeper is not None:
            await self.lease_keeper.stop()
            self.lease_keeper = None
        if self.spool:  # a last try: what storage still refuses stays in the spool file
            with contextlib.suppress(StorageError):
                await self.spool.replay(self.storage)
        self.spool.close()
        self.offload.close()
        await self.alerter.stop()
        await self.storage.close()

    async def settled(self) -> None:
        """Wait until every request answered so far has its ledger row: what this process
        reports afterwards includes them (admin reads call this first)."""
        answered = list(self.unsettled)  # not those answered later: under steady load
        if answered:  # the set is never empty, and waiting for that would never end
            with self.storage.shipping_now():  # no row lingers for a batch meanwhile
                await asyncio.wait(answered)

    @property
    def lease(self) -> timedelta:
        return self._lease_of(self.config)

    async def reload_source(self) -> ReloadResult:
        """Re-read the config file the gateway was started from and `reload` it."""
        source = self.config_source
        config = await asyncio.to_thread(_load_to_reload, source)
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
        and the running config stays. Then the new snapshot replaces the old in one
        synchronous step, so a request sees all old or all new. A request in flight keeps
        the snapshot it started with (route, deployment, prices, budgets), and its
        reservation settles against the counters it reserved on. ``server.*`` and
        ``storage.*`` are refused: they take a restart.
        """
        async with self._reloading:  # one at a time: the last one asked for wins
            return await self._reload(config, env=env, base_dir=base_dir)

    async def _reload(
        self, config: Config, *, env: Mapping[str, str] | None, base_dir: Path | None
    ) -> ReloadResult:
        self._refuse_while_draining()
        source = self.config_source
        old = self.snapshot
        _refuse_restart_only(old.config, config, source)
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
            if getattr(old.config, name) != getattr(config, name)
        )
        old_keeper = self.lease_keeper
        keeper = old_keeper
        started = self._upstream is not None and self._upstream.started
        if started and (old_keeper is not None or built.budgets):
            keeper = self._keeper(built)
        # The swap: no await from here to the end of the block.
        self.snapshot = built
        self.admission.max_wait_s = config.budget_settings.admission_wait_s
        self.admission.max_waiting = config.budget_settings.admission_queue_max
        self.env = env
        self.base_dir = base_dir
        self.keys = KeyService(self.storage, config, self.clock)
        self.thresholds.alerting = config.alerts.thresholds_bp()
        self.alerter.configure(config.alerts, env)
        self.lease_keeper = keeper
        if built.breakers != old.breakers:  # else open circuits stay open across a reload
            self.breakers = self._circuit_breakers(built)
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

    @staticmethod
    def lease_of(snapshot: Snapshot) -> timedelta:
        """How long a reservation made under ``snapshot`` holds without renewal."""
        return timedelta(seconds=snapshot.config.budget_settings.lease_ttl_s)


def _breakers(config: Config) -> BreakerPolicy | None:
    runaway = config.runaway
    if runaway.breaker_failures <= 0:
        return None
    cooldown_ms = round(runaway.breaker_cooldown_s * 1000)
    # A probe whose answer never comes (its gateway died) holds the breaker for one more
    # cool-down; then the next request probes.
    return BreakerPolicy(runaway.breaker_failures, cooldown_ms, probe_lease_ms=cooldown_ms)


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
    storage = storage or open_storage(config.storage.url, clock=clock, config=config.storage)
    snapshot = build_parts(
        config, source=source, env=env, require_secrets=require_secrets, base_dir=base_dir
    )
    return Gateway(
        snapshot,
        config_source=source,
        clock=clock,
        storage=storage,
        admin_token=env.get(config.server.admin_token_env) or None,
        env=env,
        base_dir=base_dir,
        require_secrets=require_secrets,
    )


def _load_to_reload(source: str) -> Config:
    """`load_config` for a reload, which refuses a file with no setting at all: an empty
    file is a valid config (every default), but met at a reload it is a file being written
    (`>` truncates before it writes) or emptied by mistake, and putting it in force would
    drop every provider, model and budget of the running gateway."""
    refuse_settingless(source, "a reload")
    return load_config(source)


def refuse_settingless(source: str, what: str) -> None:
    """Refuse (`ConfigError`) a config file that holds no setting (empty, or only
    comments) where putting it in force would drop every provider, model and budget of a
    running gateway: ``what`` is the one that would (a reload, a restarted worker)."""
    try:
        text = Path(source).read_bytes()
    except OSError:
        return  # load_config says what is wrong with it
    if not any(line.strip() and not line.lstrip().startswith(b"#") for line in text.splitlines()):
        raise ConfigError(
            source,
            "",
            f"the file holds no setting (empty, or only comments): {what} would drop every "
            "provider, model and budget. Write the new config whole (to a temporary file, "
            "then mv it over this one) and reload again",
        )


def restart_only_digests(config: Config) -> dict[str, str]:
    """A digest of each restart-only section of ``config`` (`RESTART_ONLY`): what a
    restarted worker of ``--workers`` must find unchanged in the file (`refuse_repinned`)."""
    return {
        section: hashlib.sha256(getattr(config, section).model_dump_json().encode()).hexdigest()
        for section in RESTART_ONLY
    }


def refuse_repinned(config: Config, digests: Mapping[str, str], source: str) -> None:
    """Refuse (`ConfigError`) a config whose restart-only sections differ from those the
    other workers run (``digests``, `restart_only_digests`): a reload refuses such a change,
    and a restarted worker that took it would serve on other storage or settings than its
    peers."""
    for section, digest in restart_only_digests(config).items():
        if section in digests and digests[section] != digest:
            raise ConfigError(
                source,
                section,
                "changed since spendgate started: the other workers run the old one (a "
                "reload refuses the change), so this restarted worker does not start; put "
                "it back, or restart spendgate to apply it",
            )
