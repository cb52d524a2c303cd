"""A real gateway and a faithful fake upstream, on loopback, in a background event loop.

Sync SDK clients block the test thread, so the servers run in a thread of their own. The
gateway talks to the simulator over real HTTP; tests talk to the gateway with the real
``openai`` and ``anthropic`` SDKs. Nothing of spendgate's own is mocked.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx2
import openai

from spendgate.clock import Clock
from spendgate.config import parse_config
from spendgate.domain.ledger import LedgerRow
from spendgate.gateway import Gateway, build_gateway
from spendgate.server import RunningGateway, start_gateway
from spendgate.services.keys import KeySpec
from spendgate.simulator import Simulator, SimulatorOptions

T = TypeVar("T")

SIM_SECRET_OPENAI = "sk-provider-openai-secret"
SIM_SECRET_ANTHROPIC = "sk-ant-provider-secret"
SIM_SECRET_GEMINI = "AIza-provider-gemini-secret"


def base_config(sim_url: str, db_path: Path) -> dict[str, Any]:
    return {
        "server": {"max_body_bytes": 200_000, "upstream_timeout_s": 5, "drain_timeout_s": 5},
        "storage": {"url": f"sqlite:///{db_path}"},
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": f"{sim_url}/v1",
                "api_key_env": "SIM_OPENAI_KEY",
            },
            "anthropic": {
                "kind": "anthropic",
                "base_url": sim_url,
                "api_key_env": "SIM_ANTHROPIC_KEY",
            },
        },
        "models": {
            "gpt-4o-mini": {"provider": "openai"},
            "gpt-4o": {"provider": "openai"},
            "o4-mini": {"provider": "openai"},
            "text-embedding-3-small": {"provider": "openai"},
            "claude-sonnet-4-6": {"provider": "anthropic"},
            "claude-haiku-4-5": {"provider": "anthropic"},
            "mystery-model": {"provider": "openai", "upstream_model": "gpt-4o-mini"},
            "house-model": {
                "provider": "openai",
                "upstream_model": "gpt-4o-mini",
                "price": {"input": "1", "output": "2"},
            },
        },
        "pricing": {"builtin_catalog": True},
        "orgs": {"acme": {"teams": ["ml", "web", "platform"]}},
    }


def with_gemini(data: dict[str, Any], *models: str) -> None:
    """A ``kind: gemini`` provider ``google`` on the simulator (its key in the harness's
    ``SIM_GEMINI_KEY``) and ``models`` served by it."""
    data["providers"]["google"] = {
        "kind": "gemini",
        "base_url": data["providers"]["anthropic"]["base_url"],
        "api_key_env": "SIM_GEMINI_KEY",
    }
    for model in models:
        data["models"][model] = {"provider": "google"}


class GatewayHarness:
    def __init__(
        self,
        db_path: Path,
        *,
        configure: Callable[[dict[str, Any]], None] | None = None,
        sim_options: SimulatorOptions | None = None,
        clock: Clock | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.db_path = db_path
        self._clock = clock
        self._extra_env = env or {}
        self._configure = configure
        self._sim_options = sim_options
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.sim: Simulator
        self.gateway: Gateway
        self.running: RunningGateway

    # lifecycle -----------------------------------------------------------------------
    def start(self) -> GatewayHarness:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.sim = Simulator(self._sim_options)
        await self.sim.start()
        data = base_config(self.sim.url, self.db_path)
        if self._configure:
            self._configure(data)
        config = parse_config(data, "harness.yaml")
        env = {
            "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
            "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
            "SIM_GEMINI_KEY": SIM_SECRET_GEMINI,
        }
        env.update(self._extra_env)
        self.gateway = build_gateway(config, source="harness.yaml", env=env, clock=self._clock)
        self.running = await start_gateway(self.gateway, "127.0.0.1", 0)

    def stop(self) -> None:
        async def _stop() -> None:
            await self.running.stop()
            await self.sim.stop()

        self.call(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()

    # access ---------------------------------------------------------------------------
    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        """Run ``coro`` on the servers' loop once every request answered so far has its
        ledger row (a budgeted request is answered just before its row lands)."""

        async def after_settled() -> T:
            gateway: Gateway | None = getattr(self, "gateway", None)
            if gateway is not None:
                await gateway.settled()
            return await coro

        return asyncio.run_coroutine_threadsafe(after_settled(), self.loop).result(timeout)

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def openai_base_url(self) -> str:
        return self.running.url + "/v1"

    def sdk_client(
        self,
        kind: str,
        secret: str,
        hooks: dict[str, list[Callable[[Any], Any]]] | None = None,
        **options: Any,
    ) -> Any:
        """A real sync SDK client (``"openai"`` or ``"anthropic"``) on this gateway; ``hooks``
        are httpx2 event hooks, e.g. to count the HTTP requests the SDK sends (its retries)."""
        http = httpx2.Client(event_hooks=hooks or {})
        if kind == "anthropic":
            return anthropic.Anthropic(
                api_key=secret, base_url=self.url, http_client=http, **options
            )
        return openai.OpenAI(
            api_key=secret, base_url=self.openai_base_url, http_client=http, **options
        )

    def create_key(self, **spec: Any) -> str:
        spec.setdefault("name", "test")
        for field in ("tags", "allowed_models"):
            if field in spec:
                spec[field] = tuple(spec[field])
        issued = self.call(self.gateway.keys.create(KeySpec(**spec)))
        self.last_key_id = issued.key.id
        return issued.secret

    def ledger(self, key_id: str | None = None, *, blocked: bool = False) -> list[LedgerRow]:
        """Rows of requests that went upstream; ``blocked=True``: the refusals instead."""
        since = datetime(2000, 1, 1, tzinfo=UTC)
        until = datetime.now(UTC) + timedelta(days=1)
        rows = self.call(self.gateway.storage.ledger(since, until))
        return [
            row
            for row in rows
            if (key_id is None or row.key_id == key_id) and (row.blocked_by is not None) == blocked
        ]

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        async def poll() -> bool:
            deadline = self.loop.time() + timeout
            while self.loop.time() < deadline:
                if predicate():
                    return True
                await asyncio.sleep(0.02)
            return predicate()

        return self.call(poll(), timeout + 5)

    def run_async(self, fn: Callable[[], Awaitable[T]]) -> T:
        async def wrapper() -> T:
            return await fn()

        return self.call(wrapper())
