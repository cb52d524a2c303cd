"""`record` returning means the row survives ``kill -9`` of the process (WAL + NORMAL)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from datetime import timedelta
from pathlib import Path

from storage_samples import NOW, build_row

from spendgate.storage import open_storage

CHILD = Path(__file__).with_name("storage_child.py")
ROWS_BEFORE_KILL = 400


def test_recorded_rows_survive_sigkill(tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "record", f"sqlite:///{db}", "8"],
        stdout=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(30, child.kill)  # never hang the suite on a stuck child
    watchdog.start()
    assert child.stdout is not None
    try:
        printed = [child.stdout.readline().strip() for _ in range(ROWS_BEFORE_KILL)]
        os.kill(child.pid, signal.SIGKILL)
        printed += child.stdout.read().split()  # lines written before the kill landed
        child.wait()
    finally:
        watchdog.cancel()
        child.stdout.close()

    assert child.returncode == -signal.SIGKILL
    assert "" not in printed[:ROWS_BEFORE_KILL], "child ended before it was killed"
    with closing(sqlite3.connect(db)) as conn:
        stored = {row[0] for row in conn.execute("SELECT request_id FROM ledger")}
    missing = set(printed) - stored
    assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {sorted(missing)[:3]}"
    assert len(stored) >= len(printed)


async def test_a_cancelled_record_still_commits(tmp_path: Path) -> None:
    """Cancelling the caller (client gone, shutdown) must not lose the charge."""
    url = f"sqlite:///{tmp_path / 'spend.db'}"
    storage = open_storage(url)
    await storage.open()
    row = build_row()
    writer = storage._require().writer  # type: ignore[attr-defined]
    with writer._lock:  # as if a batch were committing: the row must queue
        task = asyncio.create_task(storage.record(row))
        await asyncio.sleep(0)  # the row is queued for the writer
        task.cancel()
    await storage.close()

    assert task.cancelled()
    reopened = open_storage(url)
    await reopened.open()
    try:
        assert await reopened.ledger(NOW - timedelta(days=1), NOW + timedelta(days=1)) == [row]
    finally:
        await reopened.close()


async def test_a_newcomer_on_the_file_ends_inline_writes_at_once(tmp_path: Path) -> None:
    """A process writing inline (alone on the file) must notice a second process before its
    next heartbeat: inline, it would take the write lock back after every commit and could
    starve the newcomer. Its next write sees the file changed under it (``data_version``)
    and goes through the queue, taking turns; once the newcomer has gone, a heartbeat finds
    it alone again."""
    url = f"sqlite:///{tmp_path / 'spend.db'}"
    first = open_storage(url)
    await first.open()
    writer = first._require().writer  # type: ignore[attr-defined]
    try:
        assert writer._alone
        second = open_storage(url)  # its writer registers itself: a commit on the file
        await second.open()
        try:
            first_row = build_row(request_id="req_first")
            await first.record(first_row)
            # Learned from the write: the next heartbeat is up to 0.25 s away (it could
            # fall in the few ms since the newcomer registered, rarely).
            assert not writer._alone
            await second.record(build_row(request_id="req_second"))
        finally:
            await second.close()
        deadline = asyncio.get_running_loop().time() + 5
        while not writer._alone and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        assert writer._alone  # the newcomer left: inline again
        rows = await first.ledger(NOW - timedelta(days=1), NOW + timedelta(days=1))
        assert sorted(row.request_id for row in rows) == ["req_first", "req_second"]
    finally:
        await first.close()
