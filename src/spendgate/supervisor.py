"""``spendgate serve --workers N``: N worker processes serving one port, and the supervisor
that starts them, restarts the ones that die, forwards signals and spreads reloads.

One port, two ways (docs/deploy.md, "Several workers"):

* ``SO_REUSEPORT`` (Linux, the BSDs): each worker binds and listens on the port itself and
  the kernel spreads new connections over the listeners. The supervisor binds the port
  first without listening: that resolves port 0 and keeps the port reserved while a worker
  restarts; a socket that does not listen is given no connections.
* Elsewhere: the supervisor binds and listens once and every worker inherits that socket
  and accepts on it.

Signals: SIGTERM/SIGINT -> every worker drains (stops accepting, finishes what is in
flight, settles and flushes the ledger) and exits, then the supervisor; a worker still
running ``drain_timeout_s`` + `STRAGGLER_S` later is killed. SIGHUP -> every worker
re-reads the config file. A worker that exits while the supervisor is not stopping is
restarted after a backoff; more than `RestartPolicy.storm` restarts within
`RestartPolicy.window_s` is a storm: the supervisor stops everything and exits 1. A restart
that exits before it listens while other workers serve (a config file made bad since) is
tried again at the longest backoff, and counts toward no storm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from spendgate.worker import WORKER_ENV, WorkerSpec

log = logging.getLogger("spendgate.supervisor")

METRICS_DIR_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client reads it in each worker
STRAGGLER_S = 15.0  # past the drain timeout: a worker's unwind and flush, then SIGKILL
RELOAD_TIMEOUT_S = 60.0


@dataclass
class RestartPolicy:
    """When to restart a worker that died, and when to give up. Pure: it is told the
    time (a monotonic clock's seconds) of each death."""

    first_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    storm: int = 10  # restarts within window_s that make a storm
    window_s: float = 60.0
    deaths: list[float] = field(default_factory=list)

    def died(self, now: float) -> float | None:
        """A worker died at ``now``: the seconds to wait before restarting it, or None to
        give up (a storm)."""
        self.deaths = [t for t in self.deaths if now - t < self.window_s]
        self.deaths.append(now)
        if len(self.deaths) > self.storm:
            return None
        backoff: float = self.first_backoff_s * 2.0 ** (len(self.deaths) - 1)
        return min(self.max_backoff_s, backoff)


@dataclass(frozen=True, slots=True)
class Plan:
    config_path: str
    host: str
    port: int
    workers: int
    drain_timeout_s: float
    env: Mapping[str, str]
    reuse_port: bool | None = None  # None: where the platform has it
    # Digests of the restart-only config sections the supervisor started on: a worker
    # whose file differs there does not start (`spendgate.gateway.refuse_repinned`).
    pinned: Mapping[str, str] | None = None


def can_reuse_port() -> bool:
    if not hasattr(socket, "SO_REUSEPORT"):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        except OSError:
            return False
    return True


def bind(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The supervisor's socket on (host, port): a placeholder with SO_REUSEPORT, or the
    listening socket every worker inherits. Raises OSError as ``bind`` does."""
    family, kind, proto, _name, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    if reuse_port:
        _refuse_if_listened(family, kind, proto, address)
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
        if not reuse_port:
            sock.listen(2048)
            sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def _refuse_if_listened(family: int, kind: int, proto: int, address: Any) -> None:
    """OSError (EADDRINUSE) if a socket already listens on ``address``. ``SO_REUSEPORT``
    lets every socket of this user that sets it bind a port taken by another such socket:
    a second ``serve --workers N`` started by mistake on the port of a running one (an old
    deployment left running, another config) bound and listened beside it, and the
    kernel gave each some of the connections. A plain bind (``SO_REUSEADDR`` only:
    connections of an earlier run in TIME_WAIT do not stop it) fails where one listens."""
    probe = socket.socket(family, kind, proto)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    finally:
        probe.close()


def metrics_dir(env: Mapping[str, str]) -> tuple[str, bool]:
    """The workers' shared Prometheus directory, emptied of an earlier run's counters: the
    operator's ``$PROMETHEUS_MULTIPROC_DIR``, else a temporary one (True: ours to remove)."""
    given = env.get(METRICS_DIR_ENV)
    path = Path(given) if given else Path(tempfile.mkdtemp(prefix="spendgate-metrics-"))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink()
    return str(path), not given


@dataclass
class Worker:
    index: int
    proc: asyncio.subprocess.Process | None = None
    writer: asyncio.StreamWriter | None = None
    reader_task: asyncio.Task[None] | None = None
    answers: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)
    ready: bool = False
    restarts: int = 0

    def send(self, message: dict[str, Any]) -> bool:
        if self.writer is None or self.writer.is_closing():
            return False
        self.writer.write(orjson.dumps(message) + b"\n")
        return True


class Supervisor:
    def __init__(self, plan: Plan, policy: RestartPolicy | None = None) -> None:
        self.plan = plan
        self.policy = policy or RestartPolicy()
        self.reuse_port = plan.reuse_port if plan.reuse_port is not None else can_reuse_port()
        self.workers = [Worker(i) for i in range(plan.workers)]
        self.stopping = asyncio.Event()
        self.exit_code = 0
        self.port = plan.port
        self._sock: socket.socket | None = None
        self._metrics_dir: str | None = None
        self._own_metrics_dir = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._asks = 0

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> int:
        self._sock = bind(self.plan.host, self.plan.port, reuse_port=self.reuse_port)
        self.port = int(self._sock.getsockname()[1])
        self._metrics_dir, self._own_metrics_dir = metrics_dir(self.plan.env)
        log.info(
            "supervisor starting",
            extra={
                "url": f"http://{self.plan.host}:{self.port}",
                "workers": self.plan.workers,
                "sockets": "reuse_port" if self.reuse_port else "inherited",
                "pid": os.getpid(),
            },
        )
        self._signals()
        try:
            for worker in self.workers:
                self._spawn_soon(worker, 0.0)
            await self.stopping.wait()
            await self._stop_all()
        finally:
            self._sock.close()
            if self._own_metrics_dir:
                shutil.rmtree(self._metrics_dir, ignore_errors=True)
        log.info("supervisor stopped", extra={"exit_code": self.exit_code})
        return self.exit_code

    def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(signum, self.stopping.set)
        with contextlib.suppress(NotImplementedError, AttributeError):
            loop.add_signal_handler(signal.SIGHUP, self._hangup)

    def _hangup(self) -> None:
        reload = self.reload_all(None, audit_one=True)
        self._track(asyncio.create_task(reload, name="sighup-reload"))

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _spawn_soon(self, worker: Worker, delay_s: float) -> None:
        self._track(asyncio.create_task(self._life(worker, delay_s), name=f"worker-{worker.index}"))

    async def _life(self, worker: Worker, delay_s: float) -> None:
        """Start ``worker`` (after ``delay_s``), wait for it to exit, restart or give up."""
        if delay_s:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay_s)
        if self.stopping.is_set():
            return
        try:
            await self._start(worker)
        except OSError as exc:
            log.error("cannot start a worker", extra={"worker": worker.index, "error": str(exc)})
            self.exit_code = 1
            self.stopping.set()
            return
        assert worker.proc is not None
        code = await worker.proc.wait()
        listened = worker.ready
        self._forget(worker)
        if self.stopping.is_set():
            return
        if not listened and worker.restarts == 0:  # it said why on stderr (a port, a database)
            log.error("a worker could not start: stopping", extra={"worker": worker.index})
            self.exit_code = code or 1
            self.stopping.set()
            return
        if not listened and any(other.ready for other in self.workers if other is not worker):
            # A restart that could not start while other workers serve: most likely the
            # config file was made bad since (a reload refused it, and the running config
            # stays). It said why on stderr; the others serve on, and it is tried again at
            # the longest backoff, not counted as a storm, which would stop them all.
            retry = self.policy.max_backoff_s
            self._restart(
                worker, code, retry, "a worker could not restart: retrying", logging.ERROR
            )
            return
        backoff = self.policy.died(asyncio.get_running_loop().time())
        if backoff is None:
            log.error(
                "workers keep dying: giving up",
                extra={"worker": worker.index, "exit_code": code, "storm": self.policy.storm},
            )
            self.exit_code = 1
            self.stopping.set()
            return
        self._restart(worker, code, backoff, "worker died: restarting", logging.WARNING)

    def _restart(self, worker: Worker, code: int, backoff: float, message: str, level: int) -> None:
        """Log why ``worker`` is started again (``message``, at ``level``), and start it
        ``backoff`` seconds from now."""
        worker.restarts += 1
        log.log(
            level,
            message,
            extra={
                "worker": worker.index,
                "exit_code": code,
                "restarts": worker.restarts,
                "backoff_s": backoff,
            },
        )
        self._spawn_soon(worker, backoff)

    async def _start(self, worker: Worker) -> None:
        assert self._sock is not None
        ours, theirs = socket.socketpair()
        spec = WorkerSpec(
            index=worker.index,
            size=len(self.workers),
            control_fd=theirs.fileno(),
            listen_fd=None if self.reuse_port else self._sock.fileno(),
            metrics_dir=self._metrics_dir,
            restart=worker.restarts > 0,
            pinned=None if self.plan.pinned is None else dict(self.plan.pinned),
        )
        env = dict(self.plan.env)
        env[WORKER_ENV] = spec.to_env()
        env[METRICS_DIR_ENV] = self._metrics_dir or ""
        passed = [theirs.fileno()] + ([] if self.reuse_port else [self._sock.fileno()])
        try:
            worker.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "spendgate",
                "serve",
                "-c",
                self.plan.config_path,
                "--host",
                self.plan.host,
                "--port",
                str(self.port),
                env=env,
                pass_fds=passed,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        reader, worker.writer = await asyncio.open_unix_connection(sock=ours)
        worker.reader_task = asyncio.create_task(self._listen(worker, reader))
        log.info("worker started", extra={"worker": worker.index, "pid": worker.proc.pid})

    def _forget(self, worker: Worker) -> None:
        worker.ready = False
        if worker.writer is not None:
            worker.writer.close()
            worker.writer = None
        if worker.reader_task is not None:
            worker.reader_task.cancel()
            worker.reader_task = None
        for answer in worker.answers.values():
            if not answer.done():
                gone = {"ok": False, "error": "the worker exited", "index": worker.index}
                answer.set_result(gone)
        worker.answers.clear()

    async def _listen(self, worker: Worker, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            op = message.get("op")
            if op == "ready":
                worker.ready = True
                if all(w.ready for w in self.workers):
                    log.info("all workers listening", extra={"workers": len(self.workers)})
            elif op == "reloaded":
                answer = worker.answers.pop(str(message.get("id")), None)
                if answer is not None and not answer.done():
                    answer.set_result(message)
            elif op == "reload-all":
                ask = str(message.get("id"))
                self._track(asyncio.create_task(self._reload_for(worker, ask)))

    # -- reloads ---------------------------------------------------------------------------

    async def _reload_for(self, origin: Worker, ask: str) -> None:
        results = await self.reload_all(origin, ask)
        origin.send({"op": "reloaded-all", "id": ask, "results": results})

    async def reload_all(
        self, origin: Worker | None, ask: str | None = None, *, audit_one: bool = False
    ) -> list[Any]:
        """Have every worker but ``origin`` re-read the config file; what each answered.
        ``audit_one``: the first worker asked writes the reload's audit entry (a SIGHUP)."""
        if ask is None:
            self._asks += 1
            ask = f"s.{self._asks}"
        loop = asyncio.get_running_loop()
        waiting = []
        to_audit = audit_one
        for worker in self.workers:
            if worker is origin:
                continue
            answer: asyncio.Future[dict[str, Any]] = loop.create_future()
            if worker.send({"op": "reload", "id": ask, "audit": to_audit}):
                to_audit = False
                worker.answers[ask] = answer
                waiting.append(answer)
            else:  # between a death and its restart: it reads the new file as it starts
                answer.set_result({"ok": True, "index": worker.index, "restarting": True})
                waiting.append(answer)
        try:
            results = await asyncio.wait_for(asyncio.gather(*waiting), RELOAD_TIMEOUT_S)
        except TimeoutError:
            late = {"ok": False, "error": "timeout"}
            results = [a.result() if a.done() else late for a in waiting]
        failed = [r for r in results if not r.get("ok")]
        log.info("workers reloaded", extra={"asked": len(results), "failed": len(failed)})
        return list(results)

    # -- stopping --------------------------------------------------------------------------

    async def _stop_all(self) -> None:
        """SIGTERM every worker (each drains), wait, SIGKILL the ones past their time."""
        live = [w for w in self.workers if w.proc is not None and w.proc.returncode is None]
        log.info("draining workers", extra={"workers": len(live)})
        for worker in live:
            assert worker.proc is not None
            with contextlib.suppress(ProcessLookupError):
                worker.proc.send_signal(signal.SIGTERM)
        deadline = self.plan.drain_timeout_s + STRAGGLER_S
        waits = [w.proc.wait() for w in live if w.proc is not None]
        done, pending = await asyncio.wait(
            [asyncio.ensure_future(wait) for wait in waits], timeout=deadline
        )
        for worker in live:
            assert worker.proc is not None
            if worker.proc.returncode is None:
                log.error("worker did not drain in time: killed", extra={"worker": worker.index})
                with contextlib.suppress(ProcessLookupError):
                    worker.proc.kill()
                await worker.proc.wait()
        for worker in self.workers:
            self._forget(worker)
        for task in list(self._tasks):
            task.cancel()
        del done, pending


def run(plan: Plan) -> int:
    """Supervise until SIGTERM/SIGINT; the exit status (1 after a restart storm)."""
    return asyncio.run(Supervisor(plan).run())
