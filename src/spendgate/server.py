"""Running the gateway: bind, serve, on SIGHUP reload the config file, and on SIGTERM stop
accepting, drain, flush, exit. The same, as one worker of ``serve --workers N``
(`spendgate.supervisor`): the port shared with SO_REUSEPORT or inherited, and a control
socket to the supervisor (`spendgate.worker`)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

from spendgate.api.app import create_app
from spendgate.api.connections import ConnectionLimits, GuardedRunner
from spendgate.api.metrics import serve_metrics
from spendgate.api.reload import SIGNAL, audited_reload
from spendgate.errors import SpendgateError
from spendgate.gateway import Gateway
from spendgate.worker import WorkerLink, WorkerSpec

if TYPE_CHECKING:  # imported when configured: it needs the `otel` extra
    from spendgate.events.otel import Telemetry

log = logging.getLogger("spendgate.server")

UNWIND_S = 5.0  # after the drain timeout: how long cancelled requests get to record their rows


@dataclass
class RunningGateway:
    gateway: Gateway
    runner: web.AppRunner
    host: str
    port: int
    telemetry: Telemetry | None = None  # OpenTelemetry export, when configured

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
        if self.telemetry is not None:  # what is left of the spans and metrics
            await asyncio.to_thread(self.telemetry.shutdown)
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


async def start_gateway(
    gateway: Gateway,
    host: str,
    port: int,
    *,
    reuse_port: bool = False,
    sock: socket.socket | None = None,
) -> RunningGateway:
    """Listen on (host, port), with SO_REUSEPORT when ``reuse_port`` (a worker beside
    others), or accept on ``sock``, a listening socket inherited from the supervisor."""
    app = create_app(gateway)
    server = gateway.config.server
    limits = ConnectionLimits(
        server.request_header_timeout_s,
        server.max_connections_per_address,
        server.client_send_timeout_s,
    )
    runner = GuardedRunner(
        app,
        limits,
        keepalive_timeout=server.keepalive_timeout_s,
        handle_signals=False,
        access_log=None,
        handler_cancellation=True,
        shutdown_timeout=gateway.config.server.drain_timeout_s,
    )
    telemetry = subscribe_telemetry(gateway)
    await runner.setup()
    site: web.BaseSite
    if sock is not None:
        site = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(
            runner, host, port, backlog=2048, reuse_address=True, reuse_port=reuse_port or None
        )
    try:
        await site.start()
        await serve_metrics(app, host, reuse_port=reuse_port)  # metrics.port (api/metrics.py)
    except BaseException:  # e.g. the port is taken: close what setup opened (storage, pool)
        await runner.cleanup()
        if telemetry is not None:
            telemetry.shutdown()
        raise
    bound = port
    for address in runner.addresses if sock is None else [sock.getsockname()]:
        if isinstance(address, tuple):
            bound = int(address[1])
            break
    log.info("listening", extra={"url": f"http://{host}:{bound}", "models": len(gateway.models)})
    return RunningGateway(gateway, runner, host, bound, telemetry=telemetry)


def subscribe_telemetry(gateway: Gateway) -> Telemetry | None:
    """OpenTelemetry export (``telemetry.otlp``), subscribed to the gateway's events."""
    otlp = gateway.config.telemetry.otlp
    if otlp is None:
        return None
    from spendgate import __version__
    from spendgate.events.otel import otlp_telemetry

    def kind_of(name: str) -> str | None:
        provider = gateway.providers.get(name)
        return provider.kind.value if provider is not None else None

    telemetry = otlp_telemetry(
        otlp, gateway.env, instance_id=gateway.owner, version=__version__, kind_of=kind_of
    )
    gateway.events.subscribe(telemetry)
    log.info("exporting telemetry", extra={"endpoint": otlp.endpoint})
    return telemetry


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


# The cyclic collector's first threshold while serving: a young-generation collection
# after this many more container objects made than freed (Python's default: 700). A request
# makes several hundred that live until its answer, so with dozens in flight the default
# collects every few requests and finds them all alive (docs/benchmarks.md, "The cyclic
# collector"). Garbage in cycles (rare on the request path) waits a little longer.
YOUNG_THRESHOLD = 10_000


def tune_collector() -> None:
    """Once serving: freeze what the start made (the app, storage, caches: kept to the
    end) so that no collection walks it again, and collect the young generation less
    often."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


async def serve_forever(
    gateway: Gateway, host: str, port: int, worker: WorkerSpec | None = None
) -> None:
    """Serve until SIGTERM/SIGINT; as one of the supervisor's workers when ``worker``."""
    link = WorkerLink(worker) if worker is not None else None
    sock = None
    if worker is not None and worker.listen_fd is not None:
        sock = socket.socket(fileno=worker.listen_fd)
    if link is not None:
        gateway.fleet = link
    running = await start_gateway(
        gateway, host, port, reuse_port=worker is not None and sock is None, sock=sock
    )
    tune_collector()
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
    if link is not None:
        await link.open(lambda audit: reload_for_supervisor(gateway, audit), stop.set)
        link.send({"op": "ready"})
    try:
        await stop.wait()
    finally:
        await running.stop()
        if link is not None:
            await link.close()


async def reload_for_supervisor(
    gateway: Gateway, audit: bool
) -> tuple[bool, str, dict[str, object]]:
    """A reload the supervisor asked for: SIGHUP to it (``audit``: this worker writes the
    signal's one audit entry), or another worker's admin reload (audited there)."""
    try:
        if audit:
            result = await audited_reload(gateway, SIGNAL)
        else:
            result = await gateway.reload_source()
    except SpendgateError as exc:
        log.error("config not reloaded", extra={"source": gateway.config_source, "error": str(exc)})
        return False, str(exc), {}
    except Exception as exc:
        log.exception("config not reloaded", extra={"source": gateway.config_source})
        return False, str(exc), {}
    return True, "", result.to_json()


def run(gateway: Gateway, host: str, port: int, worker: WorkerSpec | None = None) -> None:
    """Serve until SIGTERM/SIGINT, on uvloop where available."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        asyncio.run(serve_forever(gateway, host, port, worker))
    else:
        uvloop.run(serve_forever(gateway, host, port, worker))
