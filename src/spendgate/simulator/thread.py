"""`SimulatorThread`: the simulator on its own event loop in a daemon thread.

For code that is not async itself (sync SDK clients, a gateway run in a subprocess, ...)::

    with SimulatorThread() as sim:
        client = openai.OpenAI(base_url=sim.openai_base_url, api_key="sk-test")
        ...
        assert sim.records[-1].completed
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING

from .server import Simulator

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

    from .options import SimulatorOptions
    from .records import RequestRecord

POLL_S = 0.005


class SimulatorThread:
    def __init__(
        self,
        options: SimulatorOptions | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        start_timeout_s: float = 10.0,
    ) -> None:
        self.simulator = Simulator(options, host, port)
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> SimulatorThread:
        if self._thread is not None:
            return self
        self._ready.clear()
        self._thread = threading.Thread(target=self._run, name="spendgate-simulator", daemon=True)
        self._thread.start()
        if not self._ready.wait(self._start_timeout_s):
            raise TimeoutError("the simulator did not start in time")
        if self._error is not None:
            self._thread.join()
            self._thread = None
            raise RuntimeError("the simulator failed to start") from self._error
        return self

    def stop(self) -> None:
        thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join()
        self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        try:
            loop.run_until_complete(self.simulator.start())
        except BaseException as exc:
            self._error = exc
            loop.close()
            self._ready.set()
            return
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            _shutdown(loop, self.simulator)

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def records(self) -> list[RequestRecord]:
        return self.simulator.records

    @property
    def url(self) -> str:
        return self.simulator.url

    @property
    def openai_base_url(self) -> str:
        return self.simulator.openai_base_url

    @property
    def anthropic_base_url(self) -> str:
        return self.simulator.anthropic_base_url

    def clear(self) -> None:
        loop = self._loop
        if loop is None or self._thread is None:
            self.simulator.clear()
            return
        asyncio.run_coroutine_threadsafe(_clear(self.simulator), loop).result()

    def wait_until(
        self, predicate: Callable[[list[RequestRecord]], bool], timeout_s: float = 5.0
    ) -> bool:
        """Poll the records until ``predicate(records)`` holds; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.records):
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_S)
        return True

    def wait_idle(self, timeout_s: float = 5.0) -> bool:
        """Wait until every recorded request has finished (streams fully written)."""
        return self.wait_until(_all_finished, timeout_s)


def _all_finished(records: list[RequestRecord]) -> bool:
    return all(record.finished for record in records)


async def _clear(simulator: Simulator) -> None:
    simulator.clear()


def _shutdown(loop: asyncio.AbstractEventLoop, simulator: Simulator) -> None:
    try:
        loop.run_until_complete(simulator.stop())
        pending = asyncio.all_tasks(loop)
        for task in pending:
            task.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.run_until_complete(loop.shutdown_asyncgens())
    finally:
        loop.close()
