"""Memory after traffic from many keys: the per-caller caches are bounded, and what a burst
left behind is given back when the gateway goes idle (`spendgate.services.idle`): once per
quiet spell after traffic, never while requests run or keep coming; SQLite's caches
dropped without disturbing a transaction, the storage serving as before."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from spendgate.clock import ManualClock
from spendgate.domain.budgets import (
    APPLIES_CACHE,
    Budget,
    BudgetBook,
    BudgetScope,
    Caller,
    Scoped,
    Unit,
)
from spendgate.domain.identity import ApiKey
from spendgate.domain.periods import Calendar, Period
from spendgate.pipeline import budgeting
from spendgate.services import idle
from spendgate.services.idle import IdleRelease
from spendgate.storage.sqlite import SqliteStorage

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)


async def test_released_once_per_quiet_spell_after_traffic() -> None:
    released: list[int] = []

    async def release() -> None:
        released.append(1)

    spell = IdleRelease(release)
    assert not await spell.tick(started=0, inflight=0)  # idle since start: nothing to give
    assert not await spell.tick(started=40, inflight=3)  # busy
    assert not await spell.tick(started=40, inflight=1)  # one request still running
    assert await spell.tick(started=40, inflight=0)  # quiet since the last tick: release
    assert not await spell.tick(started=40, inflight=0)  # still quiet: already released
    assert not await spell.tick(started=41, inflight=0)  # a request came in since
    assert await spell.tick(started=41, inflight=0)  # quiet again: released again
    assert len(released) == 2


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_the_c_heap_is_trimmed_on_linux() -> None:
    assert idle.trim_heap()


async def test_sqlite_caches_are_dropped_and_the_storage_serves_as_before(
    tmp_path: Path,
) -> None:
    storage = SqliteStorage(str(tmp_path / "g.db"), clock=ManualClock(NOW))
    await storage.open()
    try:
        keys = [
            ApiKey(f"key_{i}", f"hash_{i}", "sk-sg-...", f"k{i}", NOW, user=f"user{i}", team="ml")
            for i in range(200)
        ]
        for key in keys:
            await storage.key_store.insert_key(key)
        assert await storage.key_store.key_by_hash("hash_7") == keys[7]
        await storage.release_memory()
        writer = storage._require().writer
        with writer._lock:  # a transaction holds the writer's connection: left alone
            assert not writer.shrink_memory()
        assert writer.shrink_memory()
        assert await storage.key_store.key_by_hash("hash_150") == keys[150]
        await storage.key_store.insert_key(
            ApiKey("key_new", "hash_new", "sk-sg-...", "new", NOW, user="u", team="ml")
        )
        assert (await storage.key_store.key_by_hash("hash_new")) is not None
    finally:
        await storage.close()


def test_per_caller_caches_are_bounded() -> None:
    """What traffic from many keys leaves behind is bounded by the caches' sizes, not by
    the number of keys (docs/benchmarks.md, "Memory")."""
    assert budgeting._minimal.cache_info().maxsize == budgeting.MINIMAL_CACHE <= 1024
    budget = Budget(
        "per-key", Scoped(BudgetScope.KEY, "*", ()), Unit.NANOS, 10**9, Period.parse("daily"),
        True, (),
    )  # fmt: skip
    book = BudgetBook([budget], [], Calendar.of("UTC"))
    most = 0
    for i in range(3 * APPLIES_CACHE):
        key = ApiKey(f"key_{i}", f"hash_{i}", "sk-sg-...", f"k{i}", NOW, user=f"u{i}")
        [ref] = book.counters(Caller(key, None, "gpt-4o-mini"), NOW)
        assert ref.member == key.id
        most = max(most, len(book._applies))
    assert most == APPLIES_CACHE <= 1024
