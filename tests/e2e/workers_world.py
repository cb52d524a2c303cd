"""Helpers of the ``serve --workers N`` tests: a supervisor child, a keep-alive connection
to each of its workers, and the storage the tests read behind it.

Which worker a new connection reaches is the kernel's choice (SO_REUSEPORT hashes the
connection's addresses), so a test that must reach every worker opens connections until
it holds one per worker (`connections_to_every_worker`): ``/readyz`` on a connection says
which worker answered (``worker``, ``pid``), and the connection stays with that worker.

The storage of these tests comes from ``$SPENDGATE_TEST_STORAGE_URLS`` (comma separated;
default: ``sqlite``), so the same tests run on every backend. Each entry is a kind, and
`storage_url` makes that kind's stores afresh for each test: ``sqlite`` (a file in the
test's folder), ``postgres`` (a throwaway database ``<prefix>_<uuid>``, the prefix ``sg`` unless
$SPENDGATE_TEST_DATABASE_PREFIX names another, on the PostgreSQL server at
$PGHOST:$PGPORT, default 127.0.0.1:5432) or ``redis-pg`` (such a database, with the
live counters on Redis at $SPENDGATE_TEST_REDIS, default redis://127.0.0.1:6379/0, under a
key prefix of the test's own). Databases and prefixes are dropped when the test process
ends (`throwaway_stores` drops them at once, for tests that hold it as a context). Any
other entry is a storage URL used as it is (shared between tests: the caller cleans up).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import http.client
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from e2e.process import ADMIN_TOKEN, GatewayProcess, gateway_env, write_config
from spendgate.domain.ledger import LedgerRow
from spendgate.storage.open import open_storage

STORAGE_URLS = [u for u in os.environ.get("SPENDGATE_TEST_STORAGE_URLS", "").split(",") if u]
KINDS = ("sqlite", "postgres", "redis-pg")  # what `storage_url` builds afresh per test
PG_HOST = os.environ.get("PGHOST", "127.0.0.1")
PG_PORT = int(os.environ.get("PGPORT", "5432"))
PG_USER = os.environ.get("PGUSER", "root")
REDIS = os.environ.get("SPENDGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")
DATABASE_PREFIX = os.environ.get("SPENDGATE_TEST_DATABASE_PREFIX", "sg")  # pg_databases.py


@dataclass(frozen=True)
class Stores:
    """``storage.url`` and ``storage.counters_url`` of one test's gateways."""

    url: str
    counters_url: str | None = None

    def __str__(self) -> str:
        return self.url


def storage_urls() -> list[str]:
    return STORAGE_URLS or ["sqlite"]


def pg_admin(statement: str, *, host: str = PG_HOST, port: int = PG_PORT) -> None:
    """One statement on the server's ``postgres`` database (its own event loop)."""

    async def run() -> None:
        conn = await asyncpg.connect(f"postgresql://{PG_USER}@{host}:{port}/postgres", timeout=10)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run())


def new_database(*, host: str = PG_HOST, port: int = PG_PORT) -> str:
    name = f"{DATABASE_PREFIX}_{uuid.uuid4().hex}"
    pg_admin(f'CREATE DATABASE "{name}"', host=host, port=port)
    return f"postgresql://{PG_USER}@{host}:{port}/{name}"


def drop_stores(stores: Stores) -> None:
    """Drop a throwaway database and delete a throwaway prefix's keys (never FLUSHDB)."""
    # a throwaway prefix on a plain server (a Sentinel topology of a test's own goes
    # with its servers)
    counters = stores.counters_url or ""
    if counters.startswith("redis://") and "prefix=sgtest-" in counters:
        import redis

        base, _, query = stores.counters_url.partition("?")
        prefix = query.split("prefix=", 1)[1].split("&", 1)[0]
        client = redis.Redis.from_url(base)
        try:
            found = list(client.scan_iter(match=f"{{{prefix}}}:*", count=500))
            if found:
                client.delete(*found)
        except redis.RedisError:
            pass  # a throwaway server of the test's own, already gone
        finally:
            client.close()
    if stores.url.startswith("postgresql://") and f"/{DATABASE_PREFIX}_" in stores.url:
        rest = stores.url.removeprefix("postgresql://").split("@", 1)[1]
        address, name = rest.split("/", 1)
        host, port = address.rsplit(":", 1)
        with contextlib.suppress(OSError, asyncpg.PostgresError):  # a server already gone
            pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', host=host, port=int(port))


def make_stores(
    kind: str,
    tmp_path: Path,
    *,
    redis: str = REDIS,
    pg_host: str = PG_HOST,
    pg_port: int = PG_PORT,
) -> Stores:
    if kind == "sqlite":
        return Stores(f"sqlite:///{tmp_path / 'spendgate.db'}")
    if kind == "postgres":
        return Stores(new_database(host=pg_host, port=pg_port))
    if kind == "redis-pg":
        prefix = f"sgtest-{uuid.uuid4().hex[:12]}"
        return Stores(new_database(host=pg_host, port=pg_port), f"{redis}?prefix={prefix}")
    return Stores(kind)  # a URL of the caller's


_LEFT: list[Stores] = []


@atexit.register
def _drop_left() -> None:
    for stores in _LEFT:
        drop_stores(stores)


def storage_url(kind: str, tmp_path: Path) -> Stores:
    """Fresh stores of ``kind`` for one test (see the module docstring); dropped when the
    test process ends."""
    stores = make_stores(kind, tmp_path)
    if kind in KINDS:
        _LEFT.append(stores)
    return stores


@contextmanager
def throwaway_stores(kind: str, tmp_path: Path, **where: Any) -> Iterator[Stores]:
    """Fresh stores of ``kind``, dropped when the block ends."""
    stores = make_stores(kind, tmp_path, **where)
    try:
        yield stores
    finally:
        if kind in KINDS:
            drop_stores(stores)


def configure_storage(
    url: str | Stores, edit: Callable[[dict[str, Any]], None] | None = None
) -> Any:
    stores = url if isinstance(url, Stores) else Stores(url)

    def configure(data: dict[str, Any]) -> None:
        data["storage"] = {"url": stores.url}
        if stores.counters_url:
            data["storage"]["counters_url"] = stores.counters_url
        if edit is not None:
            edit(data)

    return configure


def start_workers(
    tmp_path: Path,
    sim_url: str,
    workers: int,
    *,
    url: str | Stores,
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


def read_rows(url: str | Stores) -> list[LedgerRow]:
    async def read() -> list[LedgerRow]:
        storage = open_storage(str(url))
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


def budget_states(config: Path, name: str | None = None) -> list[tuple[str, str, int, int]]:
    """(budget, member, spent, reserved) of every budget member (``name``: of that budget
    only, which reads no key), read from storage."""
    from spendgate.config import load_config
    from spendgate.gateway import build_gateway

    gateway = build_gateway(load_config(config), env={}, require_secrets=False)

    async def read() -> list[tuple[str, str, int, int]]:
        await gateway.storage.open()
        try:
            views = await gateway.budget_service.overview(name)
        finally:
            await gateway.storage.close()
        return [(v.budget.name, v.member, v.state.spent, v.state.reserved) for v in views]

    return asyncio.run(read())
