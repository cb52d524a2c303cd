"""A gateway process for the PostgreSQL alert tests: ``python alerts_child.py MODE URL AT``.

``raise URL START_AT``  at START_AT (epoch seconds, so that the children start together)
                        raise one alert `RAISES` times at once; print how many calls got
                        an id (only one call in all the processes may).
``claim URL START_AT``  at START_AT, claim due deliveries `CLAIM_BATCH` at a time until
                        none is left, delivering each; print the ids claimed.
"""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import timedelta

from storage_samples import NOW

from spendgate.clock import ManualClock, to_ms
from spendgate.domain.alerts import Alert
from spendgate.storage import Storage, open_storage
from spendgate.storage.alerts import AlertStore

RAISES = 50
CHANNELS = ["ops", "mail"]
CLAIM_BATCH = 3
LEASE = timedelta(hours=1)  # longer than the test: a claim is never taken over here


def alert(mark: str = "8000") -> Alert:
    return Alert(
        "threshold",
        "team-monthly",
        "ml",
        to_ms(NOW.replace(day=1)),
        mark,
        NOW,
        f"team-monthly: ml passed {mark}",
        "text",
        (("budget", "team-monthly"),),
    )


def store_of(storage: Storage) -> AlertStore:
    assert storage.alert_store is not None
    return storage.alert_store


async def raise_at(url: str, start_at: float) -> None:
    storage = open_storage(url, clock=ManualClock(NOW))
    await storage.open()
    time.sleep(max(0.0, start_at - time.time()))
    store = store_of(storage)
    ids = await asyncio.gather(*(store.raise_alert(alert(), CHANNELS) for _ in range(RAISES)))
    await storage.close()
    print(len([i for i in ids if i is not None]), flush=True)


async def claim_at(url: str, start_at: float) -> None:
    storage = open_storage(url, clock=ManualClock(NOW))
    await storage.open()
    time.sleep(max(0.0, start_at - time.time()))
    store, owner = store_of(storage), f"child-{time.monotonic_ns()}"
    claimed: list[int] = []

    async def worker() -> None:
        while batch := await store.claim_due(owner, NOW, NOW + LEASE, CLAIM_BATCH):
            for delivery in batch:
                assert await store.finish(
                    delivery.delivery_id, owner, NOW, error=None, retry_at=None
                )
                claimed.append(delivery.delivery_id)

    await asyncio.gather(*(worker() for _ in range(4)))
    await storage.close()
    print(*claimed, flush=True)


def main() -> None:
    mode, url, arg = sys.argv[1:4]
    if mode == "raise":
        asyncio.run(raise_at(url, float(arg)))
    elif mode == "claim":
        asyncio.run(claim_at(url, float(arg)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
