"""A second process for the SQLite tests: run as ``python storage_child.py MODE URL ARG``.

``open URL START_AT``  wait for the wall clock to reach START_AT (epoch seconds, so that
                       several children start together), open and close the storage.
``record URL WORKERS`` record rows forever from WORKERS concurrent tasks, printing each
                       request_id only after `record` returned: the parent kills us with
                       SIGKILL and checks that every printed id survived.
"""

from __future__ import annotations

import asyncio
import sys
import time

from storage_samples import build_row

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


def main() -> None:
    mode, url, arg = sys.argv[1:4]
    if mode == "open":
        asyncio.run(open_at(url, float(arg)))
    elif mode == "record":
        asyncio.run(record_forever(url, int(arg)))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
