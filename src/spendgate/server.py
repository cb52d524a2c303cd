"""Running the gateway: bind, serve, and on SIGTERM stop accepting, drain, flush, exit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from dataclasses import dataclass

from aiohttp import web

from spendgate.api.app import create_app
from spendgate.gateway import Gateway

log = logging.getLogger("spendgate.server")


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
        await self.runner.cleanup()
        log.info("stopped")


async def start_gateway(gateway: Gateway, host: str, port: int) -> RunningGateway:
    app = create_app(gateway)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=gateway.config.server.drain_timeout_s,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=2048, reuse_address=True)
    try:
        await site.start()
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


async def serve_forever(gateway: Gateway, host: str, port: int) -> None:
    running = await start_gateway(gateway, host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)
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
