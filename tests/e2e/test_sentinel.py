"""Counters behind Redis Sentinel (``redis+sentinel://``), failed over for real.

A topology of the test's own, on free ports in its folder (never the shared Redis): a
primary and a replica (``redis-server``, append-only, fsynced on every write) and three
sentinels (``redis-server --sentinel``, quorum 2, the primary judged down after 2 s).
Two gateways on separate ports share a throwaway PostgreSQL database (keys, ledger) and
point ``storage.counters_url`` at the three sentinels; budgeted requests flow through both.

* **Primary killed** (SIGKILL under load): until the sentinels promote the replica (held
  back by a long ``down-after-milliseconds`` while the test looks, then shortened), both
  gateways refuse with ``503 storage_unavailable`` in the caller's dialect (the outage
  policy, docs/storage.md), nothing reaches the provider unrecorded, and ``/readyz``
  names ``counters``; then both follow Sentinel to the new primary by themselves, with
  nothing to restart, and serve again.
* **``SENTINEL FAILOVER``** (the old primary alive, demoted to a replica): the gateways'
  pooled connections still reach the old primary; its ``READONLY`` answer sends them back
  to Sentinel for the new primary (redis-py retries the command there), and requests flow
  again through both gateways with no refusal.

Replication is asynchronous (docs/storage.md, "Durability"): a failover can lose the last
writes the replica had not received, which would leave the counters short of the ledger.
So before the kill the test holds the primary's writes (``CLIENT PAUSE WRITE``) and waits
until the replica has everything the primary acknowledged; the requests that meet the
paused primary time out and are refused (or, already answered, settle through the spool
and the lease sweeper), as in any outage. A paused primary cannot be demoted (Sentinel's
own commands wait too), and a primary that is not paused keeps taking the writes of
clients already connected to it from its promotion until Sentinel demotes it (seconds:
Sentinel's split-brain window, lost at the demotion), so the planned failover happens
between two loads, with nothing in flight. At the end every upstream call has exactly one
ledger row and the budget's counters, read through Sentinel from the new primary, equal
the ledger with nothing reserved. Driven by states (bounded polls), never by a delay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from e2e.process import create_key_direct
from e2e.test_multinode import Fleet
from e2e.test_multinode_outages import (
    Load,
    answers,
    budgeted,
    readyz,
    refused_in_each_dialect,
    settle_and_check,
)
from e2e.workers_world import Stores, throwaway_stores
from polling import until
from spendgate.clock import SystemClock
from spendgate.simulator.thread import SimulatorThread
from spendgate.storage.redis import RedisCounters

pytestmark = pytest.mark.slow

SERVICE = "sgprimary"
# Fail fast while no primary answers (the outage policy), as the Redis outage test does.
FAST = "&socket_timeout=0.5&socket_connect_timeout=0.5"
# Long enough that a loaded machine's pauses are not taken for a dead primary.
DOWN_AFTER_MS = 2000


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip()


def info(port: int, section: str) -> dict[str, str]:
    lines = cli(port, "info", section).splitlines()
    return dict(line.split(":", 1) for line in lines if ":" in line)


class SentinelWorld:
    """A primary, a replica and three sentinels of the test's own (see the module doc)."""

    def __init__(self, where: Path) -> None:
        self.where = where
        self.processes: dict[int, subprocess.Popen[bytes]] = {}
        self.servers = [free_port(), free_port()]  # primary, replica
        self.sentinels = [free_port() for _ in range(3)]

    def _spawn(self, port: int, args: list[str]) -> None:
        folder = self.where / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        self.processes[port] = subprocess.Popen(
            ["redis-server", *args], cwd=folder, stdout=subprocess.DEVNULL
        )
        until(lambda: cli(port, "ping") == "PONG", f"redis on {port} answers", limit_s=20)

    def start(self) -> None:
        primary, replica = self.servers
        for port in self.servers:
            args = [
                *("--port", str(port), "--bind", "127.0.0.1", "--dir", "."),
                *("--save", "", "--appendonly", "yes", "--appendfsync", "always"),
            ]
            if port == replica:
                args += ["--replicaof", "127.0.0.1", str(primary)]
            self._spawn(port, args)
        until(lambda: info(replica, "replication").get("master_link_status") == "up", "in sync")
        for port in self.sentinels:
            config = self.where / f"sentinel-{port}.conf"  # a sentinel rewrites its file
            self.where.mkdir(parents=True, exist_ok=True)
            config.write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                f"sentinel failover-timeout {SERVICE} 5000\n"
            )
            self._spawn(port, [str(config), "--sentinel"])
        for port in self.sentinels:  # each knows the replica and the other sentinels
            until(lambda p=port: self._sees_everyone(p), "sentinels discover each other")

    def judge_down_after(self, ms: int) -> None:
        """How long a primary must be silent before the sentinels fail it over."""
        for port in self.sentinels:
            done = cli(port, "sentinel", "set", SERVICE, "down-after-milliseconds", str(ms))
            assert done == "OK", done

    def _sees_everyone(self, port: int) -> bool:
        fields = info(port, "sentinel")
        return f"slaves=1,sentinels={len(self.sentinels)}" in fields.get("master0", "")

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{p}" for p in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def primary(self) -> int:
        """The primary's port, as the first sentinel names it now."""
        address = cli(self.sentinels[0], "sentinel", "get-master-addr-by-name", SERVICE)
        return int(address.splitlines()[1])

    def hold_writes_until_replicated(self) -> None:
        """Pause the primary's writes and wait until the replica has all it acknowledged:
        the failover that follows loses nothing (replication is asynchronous). A paused
        primary cannot be demoted (Sentinel's commands wait too): only before a kill."""
        assert cli(self.primary(), "client", "pause", "60000", "write") == "OK"
        self.wait_replicated()

    def wait_replicated(self) -> None:
        primary = self.primary()
        (replica,) = [p for p in self.servers if p != primary]
        offset = int(info(primary, "replication")["master_repl_offset"])
        until(
            lambda: int(info(replica, "replication").get("slave_repl_offset", -1)) >= offset,
            "the replica has every acknowledged write",
        )

    def kill(self, port: int) -> None:
        process = self.processes.pop(port)
        process.kill()
        process.wait()

    def stop(self) -> None:
        for port in list(self.processes):
            self.kill(port)


@contextmanager
def sentinel_world(where: Path) -> Iterator[SentinelWorld]:
    world = SentinelWorld(where)
    try:
        world.start()
        yield world
    finally:
        world.stop()


@contextmanager
def gateways_on(
    world: SentinelWorld, tmp_path: Path, sim: SimulatorThread
) -> Iterator[tuple[Fleet, Stores]]:
    with throwaway_stores("redis-pg", tmp_path, redis=world.url) as made:
        assert made.counters_url is not None
        assert "redis+sentinel://" in made.counters_url
        stores = dataclasses.replace(made, counters_url=made.counters_url + FAST)
        running = Fleet(tmp_path, sim.url, stores, "gateways-2", budgeted(2))
        try:
            yield running, stores
        finally:
            running.stop()


def both_serve_again(loads: list[Load]) -> None:
    before = [load.statuses[200] for load in loads]
    until(
        lambda: all(load.statuses[200] >= b + 5 for load, b in zip(loads, before, strict=True)),
        "requests flow again through both gateways",
    )


def finish(loads: list[Load]) -> None:
    for load in loads:
        load.stopping.set()
        load.join(30)
    assert [error for load in loads for error in load.unexpected] == []


def test_primary_killed_the_gateways_follow_sentinel_to_the_promoted_replica(
    tmp_path: Path,
) -> None:
    loads: list[Load] = []
    with sentinel_world(tmp_path / "redis") as world, SimulatorThread() as sim:
        old = world.primary()
        with gateways_on(world, tmp_path, sim) as (running, stores):
            try:
                secret = create_key_direct(running.config, name="budgeted", team="ml").secret
                loads = [Load(url, secret) for url in running.urls]
                for load in loads:
                    load.start()
                until(lambda: all(load.statuses[200] >= 5 for load in loads), "served")

                # No promotion before the test has seen the outage: a paused primary looks
                # dead to the sentinels too (their hello PUBLISH waits on the pause).
                world.judge_down_after(600_000)
                world.hold_writes_until_replicated()
                world.kill(old)
                for url in running.urls:
                    until(answers(url, 503), "/readyz reports the outage")
                    _status, body = readyz(url)
                    assert body["stores"] == {"storage": "ok", "counters": "unavailable"}
                    refused_in_each_dialect(url, secret, sim)  # while no primary answers
                assert world.primary() == old
                world.judge_down_after(500)
                until(lambda: world.primary() != old, "the sentinels promote the replica")
                # Nothing is killed from here on: a loaded machine's new primary slow to
                # answer a sentinel's PING for 500 ms must not be judged down (a client then
                # finds no master to connect to).
                world.judge_down_after(600_000)

                for url in running.urls:
                    until(answers(url, 200), "/readyz recovers on the new primary")
                    assert readyz(url)[1]["stores"] == {"storage": "ok", "counters": "ok"}
                both_serve_again(loads)
                finish(loads)
                assert sum(load.statuses[503] for load in loads) >= 1  # the outage was seen
                settle_and_check(running, stores, sim)
                assert info(world.primary(), "replication")["role"] == "master"
                assert running.stop() == [0, 0]
            finally:
                for load in loads:
                    load.stopping.set()


def test_sentinel_failover_moves_the_gateways_to_the_new_primary(tmp_path: Path) -> None:
    loads: list[Load] = []
    with sentinel_world(tmp_path / "redis") as world, SimulatorThread() as sim:
        old = world.primary()
        with gateways_on(world, tmp_path, sim) as (running, stores):
            try:
                secret = create_key_direct(running.config, name="budgeted", team="ml").secret
                loads = [Load(url, secret) for url in running.urls]
                for load in loads:
                    load.start()
                until(lambda: all(load.statuses[200] >= 5 for load in loads), "served")
                finish(loads)  # quiet: see the module docstring
                world.wait_replicated()

                assert cli(world.sentinels[0], "sentinel", "failover", SERVICE) == "OK"
                until(lambda: world.primary() != old, "the replica is promoted")
                until(
                    lambda: info(old, "replication").get("role") == "slave",
                    "the old primary is made a replica of the new one",
                )
                # the gateways' pooled connections still reach the old primary
                loads = [Load(url, secret) for url in running.urls]
                for load in loads:
                    load.start()
                both_serve_again(loads)
                for url in running.urls:
                    assert readyz(url)[1]["stores"] == {"storage": "ok", "counters": "ok"}
                finish(loads)
                assert sum(load.statuses[503] for load in loads) == 0  # no request refused
                settle_and_check(running, stores, sim)
                assert running.stop() == [0, 0]
            finally:
                for load in loads:
                    load.stopping.set()


def test_a_burst_past_the_pool_waits_for_a_connection_over_sentinel(tmp_path: Path) -> None:
    """Past ``max_connections`` a caller waits for a pooled connection, as on a plain
    ``redis://`` URL, instead of failing with "Too many connections" (redis-py's Sentinel
    pool does not wait by itself)."""

    async def burst(url: str) -> None:
        store = RedisCounters(url, SystemClock())
        await store.open()
        try:
            await asyncio.gather(*(store.check() for _ in range(40)))
        finally:
            await store.close()

    with sentinel_world(tmp_path / "redis") as world:
        asyncio.run(burst(f"{world.url}?prefix=sgburst&max_connections=2"))
