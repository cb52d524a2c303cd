"""A second process for the SQLite tests: run as ``python storage_child.py MODE URL ARG``.

``open URL START_AT``  wait for the wall clock to reach START_AT (epoch seconds, so that
                       several children start together), open and close the storage.
``record URL WORKERS`` record rows forever from WORKERS concurrent tasks, printing each
                       request_id only after `record` returned: the parent kills us with
                       SIGKILL and checks that every printed id survived.
``reserve URL START_AT`` at START_AT, make `RESERVATIONS` concurrent reservations on one
                       budget worth `FITS` of them (`budget_samples`), print the number
                       admitted and the sum reserved (two processes must not overshoot).
"""

from __future__ import annotations

import asyncio
import sys
import time

from budget_samples import FULL, budget, plan, ref
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock
from spendgate.domain.admission import Admitted
from spendgate.storage import open_storage


async def open_at(url: str, start_at: float) -> None:
    time.sleep(max(0.0, start_at - time.time()))
    storage = open_storage(url)
    await storage.open()
    await storage.close()
    print("opened", flush=True)


async def record_forever(url: str, workers: int) -> None:
    storage = open_storage(url)
    await storage.open()

    async def worker(n: int) -> None:
        for i in range(10**9):
            row = build_row(request_id=f"req_{n}_{i}")
            await storage.record(row)
            print(row.request_id, flush=True)

    await asyncio.gather(*(worker(n) for n in range(workers)))


RESERVATIONS = 150
FITS = 40  # the budget holds 40.5 full reservations between every process


async def reserve_at(url: str, start_at: float) -> None:
    storage = open_storage(url, clock=ManualClock(NOW))
    await storage.open()
    team = ref(budget("shared", limit=FITS * FULL + FULL // 2), NOW)
    plans = [plan([team], NOW, min_output=1_000) for _ in range(RESERVATIONS)]
    time.sleep(max(0.0, start_at - time.time()))
    decisions = await asyncio.gather(*(storage.reserve(p) for p in plans))
    admitted = [d for d in decisions if isinstance(d, Admitted)]
    await storage.close()
    print(len(admitted), sum(d.amounts[0] for d in admitted), flush=True)


def main() -> None:
    mode, url, arg = sys.argv[1:4]
    if mode == "open":
        asyncio.run(open_at(url, float(arg)))
    elif mode == "reserve":
        asyncio.run(reserve_at(url, float(arg)))
    elif mode == "record":
        asyncio.run(record_forever(url, int(arg)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
