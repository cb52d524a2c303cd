"""One worker of ``spendgate serve --workers N``: what the supervisor (`spendgate.supervisor`)
tells it at start, and its end of the control socket it shares with the supervisor.

The supervisor starts each worker as ``spendgate serve`` with ``$SPENDGATE_WORKER`` set to a
`WorkerSpec` (JSON): its index, the file descriptor of its control socket, and either the
descriptor of the listening socket it inherits or none (it binds its own with
``SO_REUSEPORT``). Messages on the control socket are JSON lines:

* worker -> supervisor ``{"op": "ready"}``: it listens;
* worker -> supervisor ``{"op": "reload-all", "id": ...}``: an admin reload reached this
  worker (and succeeded here): reload every other worker, then answer ``reloaded-all``;
* supervisor -> worker ``{"op": "reload", "id": ..., "audit": ...}``: re-read the config
  file (SIGHUP to the supervisor, or another worker's admin reload, which that worker
  audited); the worker answers ``reloaded``. Of a SIGHUP's reloads, one (``audit: true``)
  writes the audit log's entry.

End of file on the control socket means the supervisor is gone: the worker drains and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any

import orjson

log = logging.getLogger("spendgate.worker")

WORKER_ENV = "SPENDGATE_WORKER"
RELOAD_ALL_TIMEOUT_S = 60.0

# A reload in one worker (True: write it to the audit log, as the one entry of a SIGHUP to
# the supervisor); its outcome: (ok, the error message or "", what it put in force).
Reloader = Callable[[bool], Awaitable[tuple[bool, str, dict[str, object]]]]


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    index: int
    size: int  # how many workers the supervisor runs
    control_fd: int
    listen_fd: int | None  # None: bind the port itself with SO_REUSEPORT
    metrics_dir: str | None  # prometheus_client's multiprocess directory
    restart: bool = False  # a restart of a worker that died: refuses a file with no setting
    # The digest of each restart-only section of the config the supervisor started on
    # (`spendgate.gateway.restart_only_digests`): a worker whose file differs refuses it.
    pinned: dict[str, str] | None = None

    def to_env(self) -> str:
        return orjson.dumps(asdict(self)).decode()

    @classmethod
    def from_env(cls, text: str) -> WorkerSpec:
        data = orjson.loads(text)
        return cls(
            index=int(data["index"]),
            size=int(data["size"]),
            control_fd=int(data["control_fd"]),
            listen_fd=None if data["listen_fd"] is None else int(data["listen_fd"]),
            metrics_dir=data["metrics_dir"],
            restart=bool(data.get("restart", False)),
            pinned=data.get("pinned"),
        )


class WorkerLink:
    """The worker's end of the control socket: it answers the supervisor's reloads and
    asks it to reload the other workers (`spendgate.services.fleet.Fleet`)."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.index = spec.index
        self.size = spec.size
        self.metrics_dir = spec.metrics_dir
        self._writer: asyncio.StreamWriter | None = None
        self._reader: asyncio.StreamReader | None = None
        self._waiting: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._asked = 0
        self._task: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()

    async def open(self, reload: Reloader, gone: Callable[[], None]) -> None:
        """Connect to the control socket and serve the supervisor's messages in the
        background; ``gone`` is called when the supervisor goes away."""
        sock = socket.socket(fileno=self.spec.control_fd)
        self._reader, self._writer = await asyncio.open_unix_connection(sock=sock)
        self._task = asyncio.create_task(self._serve(reload, gone), name="worker-control")

    def send(self, message: dict[str, Any]) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(orjson.dumps(message) + b"\n")

    async def reload_others(self) -> dict[str, object]:
        """Have the supervisor reload every other worker; what each one answered."""
        self._asked += 1
        ask = f"{self.index}.{self._asked}"
        answer: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ask] = answer
        self.send({"op": "reload-all", "id": ask})
        try:
            reply = await asyncio.wait_for(answer, RELOAD_ALL_TIMEOUT_S)
        except TimeoutError:
            return {"workers": self.size, "others": [], "error": "the supervisor did not answer"}
        finally:
            self._waiting.pop(ask, None)
        return {"workers": self.size, "others": reply.get("results", [])}

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def _serve(self, reload: Reloader, gone: Callable[[], None]) -> None:
        assert self._reader is not None
        while line := await self._reader.readline():
            try:
                message = orjson.loads(line)
            except orjson.JSONDecodeError:
                log.error("bad control message", extra={"line": line[:200].decode("replace")})
                continue
            op = message.get("op")
            if op == "reload":
                ask, audit = str(message.get("id")), bool(message.get("audit"))
                job = asyncio.create_task(self._reload(reload, ask, audit))
                self._jobs.add(job)
                job.add_done_callback(self._jobs.discard)
            elif op == "reloaded-all":
                waiting = self._waiting.get(str(message.get("id")))
                if waiting is not None and not waiting.done():
                    waiting.set_result(message)
        log.warning("the supervisor is gone: stopping")
        gone()

    async def _reload(self, reload: Reloader, ask: str, audit: bool) -> None:
        ok, error, result = await reload(audit)
        self.send(
            {
                "op": "reloaded",
                "id": ask,
                "index": self.index,
                "pid": os.getpid(),
                "ok": ok,
                "error": error,
                "result": result,
            }
        )
