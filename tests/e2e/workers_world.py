"""Helpers of the ``serve --workers N`` tests: a supervisor child, a keep-alive connection
to each of its workers, and the storage the tests read behind it.

Which worker a new connection reaches is the kernel's choice (SO_REUSEPORT hashes the
connection's addresses), so a test that must reach every worker opens connections until
it holds one per worker (`connections_to_every_worker`): ``/readyz`` on a connection says
which worker answered (``worker``, ``pid``), and the connection stays with that worker.

The storage URL of these tests comes from ``$SPENDGATE_TEST_STORAGE_URLS`` (comma
separated; default: a SQLite file per test), so the same tests run on every backend that
``storage.url`` accepts.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from e2e.process import ADMIN_TOKEN, GatewayProcess, gateway_env, write_config
from spendgate.domain.ledger import LedgerRow
from spendgate.storage.open import open_storage

STORAGE_URLS = [u for u in os.environ.get("SPENDGATE_TEST_STORAGE_URLS", "").split(",") if u]


def storage_urls() -> list[str]:
    return STORAGE_URLS or ["sqlite"]


def storage_url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'spendgate.db'}" if kind == "sqlite" else kind


def configure_storage(url: str, edit: Callable[[dict[str, Any]], None] | None = None) -> Any:
    def configure(data: dict[str, Any]) -> None:
        data["storage"] = {"url": url}
        if edit is not None:
            edit(data)

    return configure


def start_workers(
    tmp_path: Path,
    sim_url: str,
    workers: int,
    *,
    url: str,
    edit: Callable[[dict[str, Any]], None] | None = None,
    env: dict[str, str] | None = None,
) -> tuple[Path, GatewayProcess]:
    config = write_config(tmp_path, sim_url, configure=configure_storage(url, edit))

    process = GatewayProcess(
        config, args=("--workers", str(workers)), env=gateway_env(**(env or {}))
    )
    process.start()
    wait_for_log(process, "all workers listening")
    return config, process


def wait_for_log(
    process: GatewayProcess, message: str, count: int = 1, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for e in process.log_events() if e.get("msg") == message) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"no {message!r} ({count}) in the log:\n{process.log()}")


@dataclass
class WorkerConnection:
    worker: int
    pid: int
    conn: http.client.HTTPConnection

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        headers = {"content-type": "application/json", **(headers or {})}
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        data = None if body is None else json.dumps(body).encode()
        self.conn.request(method, path, body=data, headers=headers)
        response = self.conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, raw


def connections_to_every_worker(
    process: GatewayProcess, workers: int, tries: int = 500
) -> dict[int, WorkerConnection]:
    """One keep-alive connection per worker, found by opening connections until each
    worker has answered one (counted: at most ``tries`` connections)."""
    found: dict[int, WorkerConnection] = {}
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=10)
        status, body = WorkerConnection(-1, -1, conn).request("GET", "/readyz")
        assert status == 200, body
        if body["worker"] in found:
            conn.close()
            continue
        found[body["worker"]] = WorkerConnection(body["worker"], body["pid"], conn)
        if len(found) == workers:
            return found
    raise AssertionError(f"{tries} connections reached only workers {sorted(found)}")


def close_all(connections: dict[int, WorkerConnection]) -> None:
    for connection in connections.values():
        connection.conn.close()


def read_rows(url: str) -> list[LedgerRow]:
    async def read() -> list[LedgerRow]:
        storage = open_storage(url)
        await storage.open()
        try:
            return await storage.ledger(
                datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)
            )
        finally:
            await storage.close()

    return asyncio.run(read())


def admin(connection: WorkerConnection, method: str, path: str, body: Any = None) -> Any:
    status, answer = connection.request(method, path, body, token=ADMIN_TOKEN)
    assert status == 200, answer
    return answer


def connections_per_worker(
    process: GatewayProcess, workers: int, each: int, tries: int = 2000
) -> dict[int, list[WorkerConnection]]:
    """``each`` keep-alive connections to every worker (at most ``tries`` opened)."""
    found: dict[int, list[WorkerConnection]] = {i: [] for i in range(workers)}
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", process.port, timeout=30)
        status, body = WorkerConnection(-1, -1, conn).request("GET", "/readyz")
        assert status == 200, body
        mine = found[body["worker"]]
        if len(mine) >= each:
            conn.close()
            continue
        mine.append(WorkerConnection(body["worker"], body["pid"], conn))
        if all(len(conns) == each for conns in found.values()):
            return found
    raise AssertionError(f"{tries} connections: { ({i: len(c) for i, c in found.items()}) }")


def budget_states(config: Path) -> list[tuple[str, str, int, int]]:
    """(budget, member, spent, reserved) of every budget member, read from storage."""
    from spendgate.config import load_config
    from spendgate.gateway import build_gateway

    gateway = build_gateway(load_config(config), env={}, require_secrets=False)

    async def read() -> list[tuple[str, str, int, int]]:
        await gateway.storage.open()
        try:
            views = await gateway.budget_service.overview()
        finally:
            await gateway.storage.close()
        return [(v.budget.name, v.member, v.state.spent, v.state.reserved) for v in views]

    return asyncio.run(read())
