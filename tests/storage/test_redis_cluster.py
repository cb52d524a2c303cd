"""The Redis counter store on a real Redis Cluster: three throwaway primaries of this
test's own on free ports. Every key of a deployment carries one hash tag, so each script
runs on one node; here each operation of the store runs through `RedisCluster` and all
the keys it wrote live in one slot."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from budget_samples import budget, plan, ref
from test_redis_counters import free_port

from spendgate.clock import SystemClock
from spendgate.domain.admission import Admitted
from spendgate.domain.loops import LoopPolicy
from spendgate.storage import BudgetOverride
from spendgate.storage.redis import RedisCounters


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[int]:
    ports = [cluster_port() for _ in range(3)]
    nodes = []
    for port in ports:
        where = tmp_path / str(port)
        where.mkdir()
        nodes.append(
            subprocess.Popen(
                [
                    "redis-server",
                    "--port",
                    str(port),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    str(where),
                    "--cluster-enabled",
                    "yes",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ],
                stdout=subprocess.DEVNULL,
            )
        )
    try:
        for port in ports:
            _wait(lambda p=port: _cli(p, "ping") == "PONG", "a node answers")
        subprocess.run(
            [
                "redis-cli",
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        _wait(lambda: "cluster_state:ok" in _cli(ports[0], "cluster", "info"), "cluster ok")
        yield ports[0]
    finally:
        for node in nodes:
            node.kill()
            node.wait()


def cluster_port() -> int:
    """A free port whose cluster bus port (+10000) is free too."""
    import socket

    while True:
        port = free_port()
        if port + 10_000 > 65_535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout.strip()


def _wait(check: object, what: str) -> None:
    deadline = time.monotonic() + 30
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


async def test_every_operation_runs_on_a_cluster_in_one_slot(cluster: int) -> None:
    counters = RedisCounters(f"redis+cluster://127.0.0.1:{cluster}?prefix=c1", SystemClock())
    await counters.open()
    try:
        now = datetime.now(UTC)
        refs = [ref(budget("a", 10**12), now), ref(budget("b", 10**9, period="rolling:1h"), now)]
        reservation = plan(refs, now)
        assert isinstance(await counters.reserve(reservation), Admitted)
        assert await counters.settle(reservation.reservation_id, (5, 5))
        assert not await counters.settle(reservation.reservation_id, (5, 5))
        lapsing = plan(refs, now, lease=timedelta(0))
        await counters.reserve(lapsing)
        assert await counters.renew_leases("gw-1", now + timedelta(seconds=30)) == 1
        assert [s.spent for s in await counters.counter_states(tuple(refs), now)] == [5, 5]
        assert await counters.active_members("a", 0) == ["ml"]
        await counters.set_override(BudgetOverride("a", 7, None, now))
        assert [o.limit for o in await counters.overrides(now)] == [7]
        assert await counters.clear_overrides("a") == 1
        assert await counters.reset_budget("a", None, 0) == 1
        policy = LoopPolicy(timedelta(minutes=1), timedelta(hours=1), timedelta(hours=1))
        block = await counters.strike_loop(policy, key_id="k", fingerprint="f", model="m", now=now)
        assert await counters.loop_blocks() == [block]
        assert await counters.release_loop(block.id) == block
        await counters.check()
        keys = [k async for k in counters._redis.scan_iter(match="{c1}:*")]
        slots = {await counters._redis.cluster_keyslot(k) for k in keys}
        assert len(keys) >= 5
        assert len(slots) == 1
    finally:
        await counters.close()
