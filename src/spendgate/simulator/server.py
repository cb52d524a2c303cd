"""`Simulator`: the fake provider served over real HTTP on a local port."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from aiohttp import web

from .app import STATE_KEY, create_simulator_app

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from .options import SimulatorOptions
    from .records import RequestRecord

SHUTDOWN_TIMEOUT_S = 0.5
POLL_S = 0.005


class Simulator:
    """Serve the simulator app on ``host:port`` (port 0: any free port).

    ``async with Simulator() as sim:`` then point an OpenAI client at
    ``sim.openai_base_url`` and an Anthropic client at ``sim.anthropic_base_url``.
    """

    def __init__(
        self, options: SimulatorOptions | None = None, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.app = create_simulator_app(options)
        state = self.app[STATE_KEY]
        self.options = state.options
        self.records: list[RequestRecord] = state.records
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        if self._runner is not None:
            return
        runner = web.AppRunner(
            self.app,
            access_log=None,
            handle_signals=False,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._port = int(runner.addresses[0][1])
        self._runner = runner

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Simulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def openai_base_url(self) -> str:
        return self.url + "/v1"

    @property
    def anthropic_base_url(self) -> str:
        """The host root: the Anthropic SDK appends ``/v1/messages`` itself."""
        return self.url

    def clear(self) -> None:
        """Forget the records (the list object stays the same)."""
        self.records.clear()

    async def wait_until(
        self, predicate: Callable[[list[RequestRecord]], bool], timeout_s: float = 5.0
    ) -> bool:
        """Poll the records until ``predicate(records)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.records):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_S)
        return True

    async def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every recorded request has finished (streams fully written)."""
        return await self.wait_until(_all_finished, timeout_s)


def _all_finished(records: list[RequestRecord]) -> bool:
    return all(record.finished for record in records)
