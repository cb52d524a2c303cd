"""Fixtures for the storage behaviour suite: one `storage` per backend, real files only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from uuid import uuid4

import pytest
from storage_samples import NOW, build_key, build_row

from spendgate.clock import ManualClock
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.storage import Storage, open_storage
from spendgate.storage.redis import RedisCounters

# Each backend the suite runs against; PostgreSQL and Redis join this list with a URL
# builder that points at a real server. Tests of what survives a restart take only the
# persistent ones.
# "split": keys and ledger on SQLite, counters in memory, so that settlement runs in its two
# halves (ledger, then counters) as it will with counters and ledger in separate systems.
# "redis": keys and ledger on SQLite, counters on the Redis server of 127.0.0.1:6379 (shared
# by other test runs: each test has a key prefix of its own, whose keys it deletes at
# teardown; never FLUSHALL/FLUSHDB). A test that cannot reach it fails.
BACKENDS = ["memory", "sqlite", "split", "redis"]
PERSISTENT = ["sqlite"]
COUNTERS_URL = {"split": "memory://"}
REDIS = "redis://127.0.0.1:6379/0"


def redis_url() -> str:
    """A counters URL on the shared Redis with a key prefix no other test uses."""
    return f"{REDIS}?prefix=sgtest-{uuid4().hex[:12]}"


def storage_url(backend: str, tmp_path: Path) -> str:
    if backend in ("sqlite", "split", "redis"):
        return f"sqlite:///{tmp_path / 'spend.db'}"
    if backend == "memory":
        return "memory://"
    raise AssertionError(f"no URL builder for backend {backend!r}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def url(backend: str, tmp_path: Path) -> str:
    return storage_url(backend, tmp_path)


@pytest.fixture(params=PERSISTENT)
def persistent_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return storage_url(request.param, tmp_path)


@pytest.fixture
def counters_url(backend: str) -> str | None:
    if backend == "redis":
        return redis_url()
    return COUNTERS_URL.get(backend)


@pytest.fixture
async def storage(url: str, counters_url: str | None, clock: ManualClock) -> AsyncIterator[Storage]:
    store = open_storage(url, clock=clock, counters_url=counters_url)
    await store.open()
    yield store
    if isinstance(store.counter_store, RedisCounters):
        await store.counter_store.drop_all()
    await store.close()


@pytest.fixture
def make_key() -> Callable[..., ApiKey]:
    return build_key


@pytest.fixture
def make_row() -> Callable[..., LedgerRow]:
    return build_row
