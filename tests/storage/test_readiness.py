"""``/readyz`` on a store that is slow rather than down, or that answers but takes no
writes (`Storage.check_each`).

A server that stops answering without closing its connections (overloaded, swapping,
behind a congested link) made the readiness check wait for the driver's own timeout:
PostgreSQL's statement timeout (30 s by default, or whatever the operator set), Redis's
socket timeout. A load balancer's probe gives up long before, and sees a gateway that
neither answers nor says it is unready. The check must answer within its bound, name the
slow store unavailable, and not pile a new check onto the stalled server at every probe.

The stores talk to the machine's real PostgreSQL and Redis through a TCP relay of the
test's own (`stall_relay.StallRelay`) that keeps the connections open and forwards nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
from budget_samples import budget, plan, ref
from pg_databases import HOST, PORT, admin, throwaway_database
from stall_relay import StallRelay
from storage_samples import NOW, build_row
from test_redis_counters import free_port, own_redis

from conftest import REDIS
from spendgate.config.storage import StorageConfig
from spendgate.errors import StorageError
from spendgate.storage import open_storage
from spendgate.storage.stores import Storage

LONG_S = 300  # the driver's own timeout: far past the check's bound (`CHECK_TIMEOUT_S`)
WAIT_S = 20  # how long the test waits at most for the check to answer (a hang's bound)


@pytest.fixture
async def relayed(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Storage, StallRelay]]:
    """A storage whose ``request.param`` store ("storage": PostgreSQL, "counters": Redis)
    goes through a stalling relay, with its driver's timeout set far past the bound."""
    with throwaway_database() as database:
        if request.param == "storage":
            relay = StallRelay(HOST, PORT)
            address, name = database.rsplit("/", 1)
            url = f"{address.rsplit(':', 1)[0]}:{await relay.start()}/{name}"
            config = StorageConfig(url=url, postgres={"statement_timeout_s": LONG_S})
            storage = open_storage(url, config=config)
        else:
            base = REDIS.removeprefix("redis://")
            host, _, rest = base.partition(":")
            port, _, db = rest.partition("/")
            relay = StallRelay(host, int(port))
            counters = (
                f"redis://{host}:{await relay.start()}/{db or 0}"
                f"?prefix=sgtest-slow&socket_timeout={LONG_S}"
            )
            config = StorageConfig(url=database, counters_url=counters)
            storage = open_storage(database, counters_url=counters, config=config)
        await storage.open()
        try:
            yield storage, relay
        finally:
            relay.resume()
            await storage.close()
            await relay.close()


@pytest.mark.parametrize("relayed", ["storage", "counters"], indirect=True)
async def test_a_stalled_store_is_reported_unavailable_within_the_bound(
    relayed: tuple[Storage, StallRelay], request: pytest.FixtureRequest
) -> None:
    storage, relay = relayed
    # PostgreSQL keeps the counters too; Redis only the counters
    relayed_store = request.node.callspec.params["relayed"]
    slow = {"storage": {"storage", "counters"}, "counters": {"counters"}}[relayed_store]
    assert await storage.check_each() == {"storage": None, "counters": None}

    relay.stall()
    answered = await asyncio.wait_for(storage.check_each(), WAIT_S)
    assert {name for name, error in answered.items() if error is not None} == slow
    assert all("no answer within" in str(answered[name]) for name in slow)
    connections = relay.connections
    for _ in range(2):  # probes while it stays slow wait on the check already running
        again = await asyncio.wait_for(storage.check_each(), WAIT_S)
        assert {name for name, error in again.items() if error is not None} == slow
    if relayed_store == "counters":  # (PostgreSQL's roll-up job connects on its own)
        assert relay.connections == connections  # no new connection for another check

    relay.resume()  # the check still running answers: ready again
    for _ in range(100):
        if await storage.check_each() == {"storage": None, "counters": None}:
            break
    assert await storage.check_each() == {"storage": None, "counters": None}


# -- a store that answers but takes no writes ---------------------------------------------


@pytest.mark.parametrize("refusing", ["replica", "out of memory"])
async def test_a_redis_that_takes_no_writes_is_unavailable(tmp_path: Path, refusing: str) -> None:
    """A PING answers on a replica (a plain URL left on a primary a failover demoted) and
    on a primary past its ``maxmemory``, while every reservation (a script that writes)
    is refused: `/readyz` must not call the counters ready then."""
    server = own_redis(tmp_path)
    port = server.start()
    admin = redis.Redis(port=port)
    storage = open_storage(
        "memory://", counters_url=f"redis://127.0.0.1:{port}/0?prefix=sgtest-ready"
    )
    await storage.open()
    try:
        assert await storage.check_each() == {"storage": None, "counters": None}
        if refusing == "replica":  # of a primary that is not there: read-only all the same
            admin.execute_command("REPLICAOF", "127.0.0.1", str(free_port()))
        else:
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
        with pytest.raises(StorageError):  # what every request meets
            await storage.reserve(plan([ref(budget("team", limit=10**12), NOW)], NOW))
        answered = await storage.check_each()
        assert answered["storage"] is None
        assert answered["counters"] is not None

        if refusing == "replica":
            admin.execute_command("REPLICAOF", "NO", "ONE")
        else:
            admin.config_set("maxmemory", "0")
        assert await storage.check_each() == {"storage": None, "counters": None}
    finally:
        await storage.close()
        admin.close()
        server.kill()


async def test_a_read_only_postgresql_is_unavailable() -> None:
    """``SELECT 1`` answers on a standby or a read-only database, where every request's
    write fails: the check asks whether the session can write."""
    with throwaway_database() as database:
        storage = open_storage(database)
        await storage.open()
        name = database.rsplit("/", 1)[1]
        try:
            assert await storage.check_each() == {"storage": None, "counters": None}
            admin(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
            sessions = (
                f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"  # noqa: S608
            )
            admin(sessions)  # the pool's sessions reconnect, read-only
            answers = [await storage.check_each() for _ in range(3)]  # (one meets the cut)
            assert all(answer["storage"] is not None for answer in answers)
            assert "takes no writes" in str(answers[-1]["storage"])
            with pytest.raises(StorageError):  # what every request meets
                await storage.record(build_row())
        finally:
            await storage.close()
            admin(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
