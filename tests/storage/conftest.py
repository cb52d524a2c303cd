"""Fixtures for the storage behaviour suite: one `storage` per backend, real files only."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from storage_samples import NOW, build_key, build_row

from spendgate.clock import ManualClock
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.storage import Storage, open_storage

# Each backend the suite runs against; PostgreSQL and Redis join this list with a URL
# builder that points at a real server.
BACKENDS = ["sqlite"]


def storage_url(backend: str, tmp_path: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'spend.db'}"
    raise AssertionError(f"no URL builder for backend {backend!r}")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return storage_url(request.param, tmp_path)


@pytest.fixture
async def storage(url: str, clock: ManualClock) -> AsyncIterator[Storage]:
    backend = open_storage(url, clock=clock)
    await backend.open()
    yield backend
    await backend.close()


@pytest.fixture
def make_key() -> Callable[..., ApiKey]:
    return build_key


@pytest.fixture
def make_row() -> Callable[..., LedgerRow]:
    return build_row
