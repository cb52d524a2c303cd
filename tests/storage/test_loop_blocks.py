"""Loop blocks in every backend (memory, SQLite, split): a strike reads, decides and writes
at once (two concurrent strikes of one loop strike it once), blocks are listed, released
and pruned, and on SQLite they survive a reopen and are shared by two processes' stores."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from storage_samples import NOW

from spendgate.domain.loops import LoopPolicy, loop_id
from spendgate.storage import Storage, open_storage

POLICY = LoopPolicy(
    cooldown=timedelta(seconds=60),
    cooldown_max=timedelta(seconds=600),
    forget_after=timedelta(seconds=600),
)
FP = "ab" * 12


async def strike(storage: Storage, key_id: str, at_s: float, fingerprint: str = FP) -> int:
    block = await storage.strike_loop(
        POLICY,
        key_id=key_id,
        fingerprint=fingerprint,
        model="gpt-4o",
        now=NOW + timedelta(seconds=at_s),
    )
    return block.strikes


async def test_strikes_escalate_and_concurrent_strikes_count_once(storage: Storage) -> None:
    assert await storage.loop_block("key_a", FP) is None
    first = await asyncio.gather(*(strike(storage, "key_a", 0) for _ in range(5)))
    assert first == [1] * 5
    block = await storage.loop_block("key_a", FP)
    assert block is not None
    assert (block.strikes, block.until, block.model) == (1, NOW + timedelta(seconds=60), "gpt-4o")
    assert block.id == loop_id("key_a", FP)
    assert await strike(storage, "key_a", 59.999) == 1  # still blocked: unchanged
    assert await strike(storage, "key_a", 61) == 2
    block = await storage.loop_block("key_a", FP)
    assert block is not None
    assert block.until == NOW + timedelta(seconds=61 + 120)
    assert await storage.loop_block("key_b", FP) is None  # per key
    assert await storage.loop_block("key_a", "cd" * 12) is None  # per fingerprint


async def test_blocks_are_listed_released_and_pruned(storage: Storage) -> None:
    await strike(storage, "key_a", 0)
    await strike(storage, "key_b", 10)
    await strike(storage, "key_c", 20, fingerprint="cd" * 12)
    listed = await storage.loop_blocks()
    assert [b.key_id for b in listed] == ["key_c", "key_b", "key_a"]  # latest first

    released = await storage.release_loop(loop_id("key_b", FP))
    assert released is not None
    assert released.key_id == "key_b"
    assert await storage.release_loop(loop_id("key_b", FP)) is None
    assert await storage.loop_block("key_b", FP) is None

    # key_a's block ended at 60 s, key_c's at 80 s: prune what ended before 70 s
    assert await storage.prune_loops(NOW + timedelta(seconds=70)) == 1
    assert [b.key_id for b in await storage.loop_blocks()] == ["key_c"]


async def test_blocks_survive_a_reopen_and_are_shared(persistent_url: str) -> None:
    first, second = open_storage(persistent_url), open_storage(persistent_url)
    await first.open()
    await second.open()
    try:
        assert await strike(first, "key_a", 0) == 1
        assert await strike(second, "key_a", 30) == 1  # the other store sees it blocked
        assert await strike(second, "key_a", 70) == 2
        seen = await first.loop_block("key_a", FP)
        assert seen is not None
        assert seen.strikes == 2
    finally:
        await first.close()
        await second.close()
    again = open_storage(persistent_url)
    await again.open()
    try:
        block = await again.loop_block("key_a", FP)
        assert block is not None
        assert (block.strikes, block.until) == (2, NOW + timedelta(seconds=70 + 120))
    finally:
        await again.close()
