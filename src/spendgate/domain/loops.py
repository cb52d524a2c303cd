"""Loop escalation: a detected loop stays blocked for a cool-down that grows on each repeat
detection. Pure.

Loop *detection* is a requests counter on (key, fingerprint) (`spendgate.domain.budgets.
loop_detector`). When it refuses, the pair is *struck*: blocked until ``now + cooldown``,
where the cool-down is ``cooldown * 2^(strikes-1)``, at most ``cooldown_max``. While
blocked, every request of that key with that fingerprint is refused before it is counted;
a changed request (another fingerprint) is not. A strike more than ``forget_after`` after
the previous block ended starts again at 1. Optionally (``escalate_after`` N > 0), a key
with N loops blocked at once is blocked whole: a block of its own (fingerprint
`KEY_WIDE`), struck and escalated the same way. The blocks live in storage (shared by
every gateway process on it, durable); this module decides what they become.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

# The fingerprint of a key-wide block: after ``escalate_after`` loops of one key are blocked
# at once, every request of the key is (`LoopPolicy.escalates`).
KEY_WIDE = "*"
DOUBLINGS_MAX = 62  # 2^62 * any cool-down is past any cap; keeps the arithmetic finite


def loop_id(key_id: str, fingerprint: str) -> str:
    """The short id an operator releases a block by (stable per key and fingerprint)."""
    return hashlib.blake2b(f"{key_id}|{fingerprint}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True, slots=True)
class LoopBlock:
    """One (key, fingerprint) that was detected looping: its strikes and its block."""

    key_id: str
    fingerprint: str
    model: str  # the model it asked for when last struck (for listings)
    strikes: int  # detections in a row (reset after a quiet ``forget_after``)
    detected_at: datetime  # the last detection
    until: datetime  # refused before this

    @property
    def id(self) -> str:
        return loop_id(self.key_id, self.fingerprint)

    @property
    def key_wide(self) -> bool:
        return self.fingerprint == KEY_WIDE

    @property
    def member(self) -> str:
        """The loop detector's counter member for the pair."""
        return f"{self.key_id}|{self.fingerprint}"

    def blocks(self, now: datetime) -> bool:
        return now < self.until

    def to_json(self, now: datetime, *, enforced: bool = True) -> dict[str, object]:
        """``enforced``: whether the config in force refuses its requests (a reload may
        have turned loop detection off): one that is not blocks nothing."""
        return {
            "id": self.id,
            "key_id": self.key_id,
            "fingerprint": self.fingerprint,
            "key_wide": self.key_wide,
            "model": self.model,
            "strikes": self.strikes,
            "detected_at": self.detected_at.isoformat(),
            "blocked_until": self.until.isoformat(),
            "blocked": enforced and self.blocks(now),
            "enforced": enforced,
            "remaining_s": max(0.0, (self.until - now).total_seconds()),
        }


@dataclass(frozen=True, slots=True)
class LoopPolicy:
    """How long a detected loop stays blocked (`runaway.loop_cooldown_s`, ...)."""

    cooldown: timedelta  # the first block
    cooldown_max: timedelta  # no block is longer
    forget_after: timedelta  # quiet time after a block ends that forgets its strikes
    escalate_after: int = 0  # loops of one key blocked at once that block the key (0: never)

    def escalates(self, blocks: Sequence[LoopBlock], key_id: str, now: datetime) -> bool:
        """Whether a key's loops blocked at ``now`` (of ``blocks``) block the whole key."""
        if self.escalate_after <= 0:
            return False
        held = [b for b in blocks if b.key_id == key_id and not b.key_wide and b.blocks(now)]
        return len(held) >= self.escalate_after

    def cooldown_for(self, strikes: int) -> timedelta:
        """``cooldown * 2^(strikes-1)``, at most ``cooldown_max``."""
        doublings = min(max(strikes, 1) - 1, DOUBLINGS_MAX)
        seconds = self.cooldown.total_seconds() * 2.0**doublings
        return min(timedelta(seconds=min(seconds, 1e12)), self.cooldown_max)

    def strike(
        self,
        previous: LoopBlock | None,
        *,
        key_id: str,
        fingerprint: str,
        model: str,
        now: datetime,
    ) -> LoopBlock:
        """The block after a detection at ``now``. A pair still blocked stays as it is
        (two processes detecting the same loop at once strike it once)."""
        if previous is not None and previous.blocks(now):
            return previous
        strikes = 1
        if previous is not None and now - previous.until < self.forget_after:
            strikes = previous.strikes + 1
        return LoopBlock(
            key_id=key_id,
            fingerprint=fingerprint,
            model=model,
            strikes=strikes,
            detected_at=now,
            until=now + self.cooldown_for(strikes),
        )

    def forgotten_before(self, now: datetime) -> datetime:
        """Blocks that ended before this time have no strikes left to count: prunable."""
        return now - self.forget_after


def loop_message(
    block: LoopBlock, now: datetime, until: str, repeats: int | None = None, window_s: float = 0
) -> str:
    """The refusal a blocked (or just struck) loop gets: how long, and why. ``until``: the
    block's end as the operator's calendar writes it; ``repeats``: the sends counted in the
    ``window_s`` when this request is the one detected (None: refused by the block)."""
    left = max(0.0, (block.until - now).total_seconds())
    if block.key_wide:
        return (
            "Loop detected: this key has too many requests blocked as loops, so every "
            f"request of it is blocked until {until} ({_seconds(left)} from now), repeat "
            f"detection {block.strikes}; each repeat detection doubles the block. Fix the "
            "client that repeats its requests; an operator can release the key with "
            f"`spendgate loops release {block.id}`."
        )
    seen = (
        f"this key sent the same request {repeats} times within {window_s:g} s"
        if repeats is not None
        else "this key sent the same request again while it is blocked as a loop"
    )
    return (
        f"Loop detected: {seen}. Blocked until {until} ({_seconds(left)} from now), repeat "
        f"detection {block.strikes}; each repeat detection doubles the block. Change the "
        "request, or fix the client that repeats it; an operator can release it with "
        f"`spendgate loops release {block.id}`."
    )


def _seconds(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.0f} s"
