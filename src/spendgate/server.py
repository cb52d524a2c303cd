"""Running the gateway: bind, serve, on SIGHUP reload the config file, and on SIGTERM stop
accepting, drain, flush, exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from spendgate.api.app import create_app
from spendgate.api.connections import ConnectionLimits, GuardedRunner
from spendgate.api.metrics import serve_metrics
from spendgate.api.reload import SIGNAL, audited_reload
from spendgate.errors import SpendgateError
from spendgate.gateway import Gateway

log = logging.getLogger("spendgate.server")

UNWIND_S = 5.0  # after the drain timeout: how long cancelled requests get to record their rows


@dataclass
class RunningGateway:
    gateway: Gateway
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), flush storage."""
        self.gateway.draining = True
        log.info("draining", extra={"inflight": self.gateway.inflight})
        for site in list(self.runner.sites):
            await site.stop()  # new connections are refused from here on
        timeout = self.gateway.config.server.drain_timeout_s
        cut = await drain(self.gateway.requests.tasks, timeout)
        if cut:
            log.warning("drain timeout: requests cut", extra={"cut": cut, "timeout_s": timeout})
        await self.runner.cleanup()
        log.info("stopped")


async def drain(tasks: set[asyncio.Task[Any]], timeout_s: float) -> int:
    """Wait up to ``timeout_s`` for the proxied requests in ``tasks``; cancel the ones still
    running and wait while they unwind (each records its ledger row). How many were cut.

    aiohttp's own shutdown alone would wait up to twice its timeout for a streaming
    handler, then cancel it without waiting, racing the storage flush.
    """
    await _until_empty(tasks, timeout_s)
    late = list(tasks)
    for task in late:
        task.cancel()
    await _until_empty(tasks, UNWIND_S)
    return len(late)


async def _until_empty(tasks: set[asyncio.Task[Any]], timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while tasks and loop.time() < deadline:  # noqa: ASYNC110 - a set has no event to wait on
        await asyncio.sleep(0.01)


async def start_gateway(gateway: Gateway, host: str, port: int) -> RunningGateway:
    app = create_app(gateway)
    server = gateway.config.server
    limits = ConnectionLimits(server.request_header_timeout_s, server.max_connections_per_address)
    runner = GuardedRunner(
        app,
        limits,
        keepalive_timeout=server.keepalive_timeout_s,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=gateway.config.server.drain_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    try:
        await site.start()
        await serve_metrics(app, host)  # metrics.port: /metrics alone (api/metrics.py)
    except BaseException:  # e.g. the port is taken: close what setup opened (storage, pool)
        await runner.cleanup()
        raise
    bound = port
    for address in runner.addresses:
        if isinstance(address, tuple):
            bound = int(address[1])
            break
    log.info("listening", extra={"url": f"http://{host}:{bound}", "models": len(gateway.models)})
    return RunningGateway(gateway=gateway, runner=runner, host=host, port=bound)


async def reload_on_signal(gateway: Gateway) -> bool:
    """SIGHUP: re-read the config file and put it in force (audited as ``signal:SIGHUP``).
    A bad file is logged (its message names the file, key path and rule) and the running
    config stays."""
    try:
        await audited_reload(gateway, SIGNAL)
    except SpendgateError as exc:
        log.error("config not reloaded", extra={"source": gateway.config_source, "error": str(exc)})
        return False
    except Exception:
        log.exception("config not reloaded", extra={"source": gateway.config_source})
        return False
    return True


async def serve_forever(gateway: Gateway, host: str, port: int) -> None:
    running = await start_gateway(gateway, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reloads: set[asyncio.Task[bool]] = set()  # strong references until each one is done

    def hangup() -> None:
        task = loop.create_task(reload_on_signal(gateway), name="sighup-reload")
        reloads.add(task)
        task.add_done_callback(reloads.discard)

    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
    with contextlib.suppress(NotImplementedError, AttributeError):  # no SIGHUP on Windows
        loop.add_signal_handler(signal.SIGHUP, hangup)
    try:
        await stop.wait()
    finally:
        await running.stop()


def run(gateway: Gateway, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT, on uvloop where available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve_forever(gateway, host, port))
    else:
        uvloop.run(serve_forever(gateway, host, port))
