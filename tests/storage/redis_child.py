"""A gateway-like process for the Redis tests: ``python redis_child.py URL START_AT N``.

Waits for the wall clock to reach START_AT (epoch seconds, so that several children start
together), then makes N reservations at once against the budgets of `budgets()` on the
counters at URL, with the system clock (so the scripts use the Redis server's time), and
prints one line per reservation: ``admitted AMOUNTS...`` or ``refused``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import time
from datetime import UTC, datetime

from budget_samples import WORST, budget, plan, ref

from spendgate.clock import SystemClock
from spendgate.domain.admission import Admitted
from spendgate.domain.budgets import Budget, Kind, Unit
from spendgate.storage.redis import RedisCounters

DOLLARS = 7 * 5_000_000 + 1_234_567  # room for 7 full requests and a clamped one
TOKENS = 17_500
REQUESTS = 15


def budgets() -> list[Budget]:
    """A dollar budget and a token budget (both clamp) and a rolling request limit."""
    limit = budget("rl", REQUESTS, unit=Unit.REQUESTS, period="rolling:1h")
    return [
        budget("usd", DOLLARS),
        budget("tok", TOKENS, unit=Unit.TOKENS),
        dataclasses.replace(limit, kind=Kind.LIMIT),
    ]


async def run(url: str, start_at: float, n: int) -> None:
    counters = RedisCounters(url, SystemClock())
    await counters.open()
    time.sleep(max(0.0, start_at - time.time()))
    now = datetime.now(UTC)
    refs = [ref(spec, now) for spec in budgets()]

    async def one(i: int) -> str:
        reservation = plan(refs, now, worst=WORST, min_output=100, owner=f"child-{os.getpid()}")
        decision = await counters.reserve(reservation)
        if isinstance(decision, Admitted):
            return "admitted " + " ".join(str(a) for a in decision.amounts)
        return "refused"

    for line in await asyncio.gather(*(one(i) for i in range(n))):
        print(line, flush=True)
    await counters.close()


if __name__ == "__main__":
    asyncio.run(run(sys.argv[1], float(sys.argv[2]), int(sys.argv[3])))
