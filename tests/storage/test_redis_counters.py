"""The Redis counter store beyond the behaviour suite: several processes on one budget,
the server's clock, and scripts that vanish (NOSCRIPT) — on the shared Redis of
127.0.0.1:6379, each test under a key prefix of its own."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import uuid4

import pytest
from budget_samples import UTC_CALENDAR, WORST, budget, plan, ref
from redis.asyncio.cluster import RedisCluster
from redis_child import DOLLARS, REQUESTS, TOKENS, budgets

from conftest import REDIS
from spendgate.clock import SystemClock, from_ms
from spendgate.config import parse_config
from spendgate.domain.admission import Admitted
from spendgate.domain.budgets import Unit
from spendgate.domain.periods import window
from spendgate.errors import ConfigError, StorageError
from spendgate.storage.redis import RedisCounters
from spendgate.storage.redis.connect import client, parse

CHILD = Path(__file__).with_name("redis_child.py")


@pytest.fixture
async def server_time() -> AsyncIterator[RedisCounters]:
    """A store on the Redis server's clock (the production mode: a `SystemClock`)."""
    counters = RedisCounters(f"{REDIS}?prefix=sgtest-{uuid4().hex[:12]}", SystemClock())
    await counters.open()
    yield counters
    await counters.drop_all()
    await counters.close()


async def test_two_processes_on_one_small_budget_never_overshoot(
    server_time: RedisCounters,
) -> None:
    """Two OS processes reserve 60 requests each at once against a dollar budget with
    room for 7 and a bit, a token budget and a rolling request limit: together they are
    admitted exactly what fits, on every counter."""
    url = f"{REDIS}?prefix={server_time._target.prefix}"
    start_at = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), url, str(start_at), "60"],
            stdout=subprocess.PIPE,
            text=True,
            cwd=CHILD.parent,
        )
        for _ in range(2)
    ]
    tokens = []
    for child in children:
        out, _ = child.communicate(timeout=60)
        assert child.returncode == 0
        tokens += out.split()
    decisions = _decisions(tokens)
    assert len(decisions) == 120
    amounts = [d for d in decisions if d is not None]
    usd, tok, req = (sum(a[i] for a in amounts) for i in range(3))
    assert usd <= DOLLARS  # overshoot 0, on every counter
    assert tok <= TOKENS
    assert req <= REQUESTS
    # ...and not by refusing too much: the tightest budget is full to what requests need.
    assert DOLLARS - usd < WORST.amount(Unit.NANOS, 100)
    states = await server_time.counter_states(
        tuple(ref(spec, datetime.now(UTC)) for spec in budgets()), datetime.now(UTC)
    )
    assert [s.reserved for s in states] == [usd, tok, req]
    assert [s.spent for s in states] == [0, 0, 0]


def _decisions(tokens: list[str]) -> list[tuple[int, int, int] | None]:
    out: list[tuple[int, int, int] | None] = []
    i = 0
    while i < len(tokens):
        if tokens[i] == "refused":
            out.append(None)
            i += 1
        else:
            assert tokens[i] == "admitted"
            out.append((int(tokens[i + 1]), int(tokens[i + 2]), int(tokens[i + 3])))
            i += 4
    return out


async def test_rolling_windows_and_leases_run_on_the_servers_clock(
    server_time: RedisCounters,
) -> None:
    """The caller's clock gives durations only: a replica whose clock is a day off still
    files spend in the server's current bucket, and its lease ends a lease-length after the
    server's now."""
    redis = server_time._redis
    spec = budget("rolling", period="rolling:1h")  # buckets of 150 s
    skewed = datetime.now(UTC) - timedelta(days=1)
    counter = ref(spec, skewed)
    width_ms = 150_000
    before = await redis.time()
    reservation = plan([counter], datetime.now(UTC), lease=timedelta(seconds=30))
    decision = await server_time.reserve(reservation)
    after = await redis.time()
    assert isinstance(decision, Admitted)
    (held,) = await server_time.holding(reservation.reservation_id) or ()
    low, high = (int(t[0]) * 1000 + int(t[1]) // 1000 for t in (before, after))
    assert low // width_ms * width_ms <= held[2] <= high // width_ms * width_ms
    assert held[2] != counter.window.bucket_ms
    (state,) = decision.states
    assert state.ref.window.bucket_ms == held[2]
    # the window `spendgate.domain.periods.window` gives at the server's time
    assert state.ref.window == window(spec.period, from_ms(held[2]), UTC_CALENDAR)
    # The lease: 30 s after the server's now, whatever ``now`` the sweeper passes.
    expires = int(await redis.zscore(server_time._leases, reservation.reservation_id))
    assert low + 29_000 <= expires <= high + 31_000
    assert await server_time.lapsed(datetime.now(UTC) + timedelta(days=2), 10) == []


async def test_scripts_flushed_from_the_server_are_loaded_again(tmp_path: Path) -> None:
    """NOSCRIPT (a restarted or failed-over server): the store loads the script and runs it.
    A server of this test's own, since SCRIPT FLUSH empties a whole server's cache."""
    with own_redis(tmp_path) as port:
        counters = RedisCounters(f"redis://127.0.0.1:{port}/0", SystemClock())
        await counters.open()
        try:
            await counters._redis.script_flush()
            reservation = plan([ref(budget("b"), datetime.now(UTC))], datetime.now(UTC))
            assert isinstance(await counters.reserve(reservation), Admitted)
            assert await counters.settle(reservation.reservation_id, (5,))
            assert not await counters.settle(reservation.reservation_id, (5,))  # once
        finally:
            await counters.close()


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class own_redis:
    """A throwaway redis-server on a free port (append-only file fsynced on every write, so
    a SIGKILL loses no acknowledged write); never the shared one."""

    def __init__(self, where: Path, port: int | None = None) -> None:
        self.where = where
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.where),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        import socket

        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self.port
            except OSError:
                assert self.process.poll() is None, "redis-server did not start"
                assert time.monotonic() < deadline, "redis-server never listened"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> int:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.kill()


def test_the_url_forms() -> None:
    """What each documented URL form connects to (parsing only: no Sentinel or Cluster
    runs here, so connecting through them is not tested)."""
    plain = parse("redis://:s3cret@db:6380/2?prefix=team-a&socket_timeout=0.5")
    assert (plain.scheme, plain.prefix) == ("redis", "team-a")
    assert plain.url.startswith("redis://:s3cret@db:6380/2?")
    assert "socket_timeout=0.5" in plain.url
    assert "socket_connect_timeout=2" in plain.url
    assert "prefix" not in plain.url
    assert parse("rediss://db:6380").url.startswith("rediss://db:6380?")
    assert parse("redis://db").prefix == "spendgate"

    sentinel = parse("redis+sentinel://:pw@s1:26379,s2/primary/3?prefix=p")
    assert sentinel.sentinels == (("s1", 26379), ("s2", 26379))
    assert sentinel.service == "primary"
    assert sentinel.url.startswith("redis://:pw@localhost/3?")

    cluster = parse("rediss+cluster://node:7000?prefix=p")
    assert cluster.url.startswith("rediss://node:7000?")
    assert isinstance(client(cluster), RedisCluster)

    for bad in ("redis+sentinel://:pw@s1:26379", "redis://db?prefix={x}"):
        with pytest.raises(StorageError) as caught:
            parse(bad)
        assert "pw" not in str(caught.value)


def test_a_budget_beyond_the_exact_range_is_refused_when_the_config_loads() -> None:
    data = {
        "storage": {"url": "sqlite:///x.db", "counters_url": "redis://127.0.0.1:6379/0"},
        "budgets": [
            {"name": "fine", "scope": "org", "match": "*", "limit_usd": "9000000"},
            {"name": "huge", "scope": "org", "match": "*", "limit_usd": "9007200"},
        ],
    }
    with pytest.raises(ConfigError, match=r"budgets\[1\].*'huge'.*Redis"):
        parse_config(data, "redis.yaml")
    data["storage"] = {"url": "sqlite:///x.db"}  # SQLite counts in 64-bit integers
    assert parse_config(data, "redis.yaml").budgets[1].name == "huge"
