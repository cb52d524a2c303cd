"""Fixtures for the storage behaviour suite: one `storage` per backend, real files only."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from uuid import uuid4

import pytest
from pg_databases import throwaway_database
from storage_samples import NOW, build_key, build_row

from spendgate.clock import ManualClock
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.storage import Storage, open_storage
from spendgate.storage.redis import RedisCounters

# Each backend the suite runs against; Redis joins this list with a URL builder that
# points at a real server. Tests of what survives a restart take only the persistent ones.
# "split": keys and ledger on SQLite, counters in memory, so that settlement runs in its two
# halves (ledger, then counters) as it will with counters and ledger in separate systems.
# "postgres": a throwaway database on the PostgreSQL server of `pg_databases` (a test fails,
# never skips, when it cannot be reached).
# "redis-pg": keys and ledger on PostgreSQL, counters on Redis (the production shape).
BACKENDS = ["memory", "sqlite", "split", "redis", "postgres", "redis-pg"]
PERSISTENT = ["sqlite", "postgres"]
COUNTERS_URL = {"split": "memory://"}
REDIS = os.environ.get("SPENDGATE_TEST_REDIS", "redis://127.0.0.1:6379/0")


def redis_url() -> str:
    """A counters URL on the shared Redis with a key prefix no other test uses."""
    return f"{REDIS}?prefix=sgtest-{uuid4().hex[:12]}"


@contextmanager
def storage_url(backend: str, tmp_path: Path) -> Iterator[str]:
    if backend in ("sqlite", "split", "redis"):
        yield f"sqlite:///{tmp_path / 'spend.db'}"
    elif backend == "memory":
        yield "memory://"
    elif backend in ("postgres", "redis-pg"):
        with throwaway_database() as url:
            yield url
    else:
        raise AssertionError(f"no URL builder for backend {backend!r}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def url(backend: str, tmp_path: Path) -> Iterator[str]:
    with storage_url(backend, tmp_path) as found:
        yield found


@pytest.fixture(params=PERSISTENT)
def persistent_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with storage_url(request.param, tmp_path) as found:
        yield found


@pytest.fixture
def counters_url(backend: str) -> str | None:
    if backend in ("redis", "redis-pg"):
        return redis_url()
    return COUNTERS_URL.get(backend)


@asynccontextmanager
async def opened(url: str, counters_url: str | None, clock: ManualClock) -> AsyncIterator[Storage]:
    store = open_storage(url, clock=clock, counters_url=counters_url)
    await store.open()
    try:
        yield store
    finally:
        if isinstance(store.counter_store, RedisCounters):
            await store.counter_store.drop_all()
        await store.close()


@pytest.fixture
async def storage(url: str, counters_url: str | None, clock: ManualClock) -> AsyncIterator[Storage]:
    async with opened(url, counters_url, clock) as store:
        yield store


@pytest.fixture
async def second_storage(
    url: str, counters_url: str | None, clock: ManualClock
) -> AsyncIterator[Storage]:
    """Another process's view of the same stores as `storage` (its own connections): for
    the backends several processes share (not ``memory`` nor ``split``)."""
    async with opened(url, counters_url, clock) as store:
        yield store


@pytest.fixture
def make_key() -> Callable[..., ApiKey]:
    return build_key


@pytest.fixture
def make_row() -> Callable[..., LedgerRow]:
    return build_row
