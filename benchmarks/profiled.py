"""`spendgate serve` under cProfile, counting SQLite statements: the gateway side of
`benchmarks.profile`.

    python -m benchmarks.profiled OUT_PREFIX serve -c config.yaml --port N

SIGUSR1 starts a measurement (profile and counts reset); SIGUSR2 ends it and writes
``OUT_PREFIX.<n>.prof`` (cProfile's stats, event-loop thread) and ``OUT_PREFIX.<n>.json``
(statements executed on every SQLite connection of the process, by their first words).
"""

from __future__ import annotations

import cProfile
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

import spendgate.storage.sqlite.connection as connection

_counts: Counter[str] = Counter()
_lock = threading.RLock()  # the signal handlers take it on the thread that may hold it


def _kind(sql: str) -> str:
    words = " ".join(sql.split()[:6])
    return words[:70]


def _trace(sql: str) -> None:
    with _lock:
        _counts[_kind(sql)] += 1


_connect = connection.connect


def _counting_connect(path: str, *, shared: bool = False) -> sqlite3.Connection:
    conn = _connect(path, shared=shared)
    conn.set_trace_callback(_trace)
    return conn


def main() -> None:
    prefix = Path(sys.argv[1])
    connection.connect = _counting_connect
    # The modules that imported `connect` by name before this ran keep the original.
    import spendgate.storage.sqlite.file as file
    import spendgate.storage.sqlite.writer as writer

    file.connect = _counting_connect  # type: ignore[attr-defined]
    writer.connect = _counting_connect  # type: ignore[attr-defined]
    # CPU time of the event-loop thread: wall time would charge a socket write for the
    # simulator and the load generator that it wakes on the same cores.
    profiler = cProfile.Profile(time.thread_time)
    taken = 0

    def start(_signum: int, _frame: FrameType | None) -> None:
        with _lock:
            _counts.clear()
        profiler.clear()
        profiler.enable()

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal taken
        profiler.disable()
        profiler.dump_stats(f"{prefix}.{taken}.prof")
        with _lock:
            counts: dict[str, Any] = dict(_counts)
        Path(f"{prefix}.{taken}.json").write_bytes(orjson.dumps(counts))
        taken += 1

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from spendgate.cli.main import main as spendgate_main

    sys.argv = ["spendgate", *sys.argv[2:]]
    spendgate_main()


if __name__ == "__main__":
    main()
