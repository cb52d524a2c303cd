"""Detected loops and their blocks, behind both ``spendgate loops`` and the admin API: list
them, and release one (an operator's decision that the client has been fixed)."""

from __future__ import annotations

from spendgate.clock import Clock
from spendgate.domain.budgets import BudgetBook
from spendgate.domain.loops import LoopBlock
from spendgate.domain.periods import window
from spendgate.errors import NotFound
from spendgate.storage import Storage


class LoopService:
    def __init__(self, storage: Storage, book: BudgetBook, clock: Clock) -> None:
        self._storage = storage
        self._book = book
        self._clock = clock

    async def blocks(self, *, ended: bool = False) -> list[LoopBlock]:
        """The blocks in force, latest detection first; ``ended``: also those that ended
        but whose strikes are still remembered (a repeat detection doubles them), and
        those the config no longer enforces (`enforces`)."""
        now = self._clock.now()
        found = await self._storage.loop_blocks()
        if ended:
            return found
        return [block for block in found if block.blocks(now) and self.enforces(block)]

    def enforces(self, block: LoopBlock) -> bool:
        """Whether the config in force refuses ``block``'s requests while it lasts: not
        after a reload turned loop detection off (``runaway.loop_max_repeats: 0``), nor a
        key-wide block after one turned escalation off (``runaway.loop_escalate_after:
        0``); the block stays stored and is enforced again if they come back."""
        if self._book.loop is None or self._book.loops is None:
            return False
        return not block.key_wide or self._book.loops.escalate_after > 0

    async def release(self, block_id: str) -> LoopBlock:
        """Unblock the pair now and forget its strikes; its repeats counted in the current
        window are forgiven too, so its next request is served (and counted afresh)."""
        block = await self._storage.release_loop(block_id)
        if block is None:
            raise NotFound(f"no loop block {block_id!r} (see `spendgate loops --all`)", param="id")
        detector = self._book.loop
        if detector is not None:  # from the window that detected it, whatever the clock
            calendar = self._book.calendar
            since = min(
                window(detector.period, moment, calendar).since_ms
                for moment in (block.detected_at, self._clock.now())
            )
            await self._storage.reset_budget(detector.name, block.member, since)
        return block
