"""`spendgate serve` with a memory probe: the gateway side of `benchmarks.memory`.

    python -m benchmarks.memory_probe OUT_PREFIX [--trace N] serve -c config.yaml --port N

SIGUSR1 writes ``OUT_PREFIX.<n>.json``, without collecting garbage first: the C library's
heap (glibc ``mallinfo2``: bytes in use, bytes free but held, arenas), SQLite's own
allocator (``sqlite3_memory_used``: every connection's page cache, schema and prepared
statements), the interpreter's own view (``sys.getallocatedblocks``, objects per type, the
largest counts first), and, with ``--trace N`` (tracemalloc started before spendgate is
imported, N frames), the Python heap by file and line (the top 40), by file, and its total.
RSS and its split (anonymous, file) are read from ``/proc`` by the benchmark itself:
tracemalloc's own bookkeeping inflates them, so its runs are separate.
"""

from __future__ import annotations

import ctypes
import gc
import signal
import sys
import tracemalloc
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import orjson

FIELDS = (
    "arena",  # bytes the heaps span (every arena)
    "ordblks",
    "smblks",
    "hblks",
    "hblkhd",  # bytes in chunks of their own mapping (large allocations)
    "usmblks",
    "fsmblks",
    "uordblks",  # bytes in use
    "fordblks",  # bytes free but held
    "keepcost",
)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in FIELDS]


def mallinfo() -> dict[str, int]:
    """glibc's heap statistics (all arenas); empty elsewhere."""
    try:
        libc = ctypes.CDLL(None)
        function = libc.mallinfo2
    except (OSError, AttributeError):
        return {}
    function.restype = _MallInfo2
    info = function()
    return {name: int(getattr(info, name)) for name in FIELDS}


def sqlite_memory() -> dict[str, int]:
    """SQLite's own allocator: bytes in use now and at most (the library ``_sqlite3`` links:
    every connection of the process)."""
    try:
        import _sqlite3

        library = ctypes.CDLL(_sqlite3.__file__)
        used, highest = library.sqlite3_memory_used, library.sqlite3_memory_highwater
    except (OSError, AttributeError, ImportError):
        return {}
    used.restype = highest.restype = ctypes.c_int64
    highest.argtypes = [ctypes.c_int]
    return {"used": int(used()), "highwater": int(highest(0))}


def report() -> dict[str, Any]:
    """What the heap holds now. No collection first: the gateway's own collections (and
    the one its idle release runs) decide what garbage is freed, and a probe that collected
    would free it for every variant alike, hiding that difference from the next point."""
    types = Counter(type(obj).__name__ for obj in gc.get_objects())
    found: dict[str, Any] = {
        "mallinfo": mallinfo(),
        "sqlite": sqlite_memory(),
        "allocated_blocks": sys.getallocatedblocks(),
        "objects": dict(types.most_common(25)),
        "modules": len(sys.modules),
    }
    if tracemalloc.is_tracing():
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        stats = snapshot.statistics("lineno")
        found["traced_bytes"] = sum(stat.size for stat in stats)
        found["top"] = [
            {"where": str(stat.traceback), "bytes": stat.size, "count": stat.count}
            for stat in stats[:40]
        ]
        by_file = snapshot.statistics("filename")
        found["files"] = [
            {"where": str(stat.traceback), "bytes": stat.size} for stat in by_file[:40]
        ]
    return found


def main() -> None:
    prefix = Path(sys.argv[1])
    rest = sys.argv[2:]
    if rest[:1] == ["--trace"]:
        tracemalloc.start(int(rest[1]))
        rest = rest[2:]
    taken = 0

    def dump(_signum: int, _frame: FrameType | None) -> None:
        nonlocal taken
        Path(f"{prefix}.{taken}.json").write_bytes(orjson.dumps(report()))
        taken += 1

    signal.signal(signal.SIGUSR1, dump)
    from spendgate.cli.main import main as spendgate_main

    sys.argv = ["spendgate", *rest]
    spendgate_main()


if __name__ == "__main__":
    main()
