"""The spool's files on disk (`spendgate.storage.spool`): what a gateway that starts finds
in the files of processes that died, and what it must never take.

* A process killed while it appended (or whose disk filled mid-line) leaves a line cut
  off. The rows around it are adopted and written all the same; the line is set aside in
  ``<file>.rejected`` and the file removed once its rows are written. Before, one bad line
  made the whole file unreadable from there on: the rows after it were never written, and
  the file stayed, read again (and its rows replayed) at every start.
* A live process's file is locked for as long as it lives, also while it rewrites it
  after a replay: a gateway starting at that moment (a worker restarted by
  ``serve --workers N``) took the file for a dead process's and, once it had written the
  rows, removed it, while its owner kept appending rows to the removed file.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from storage_samples import build_row

from conftest import storage_url
from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.errors import StorageError
from spendgate.storage import open_storage, spool
from spendgate.storage.spool import Spool, Unwritten
from spendgate.storage.stores import Storage


@pytest.fixture
async def storage() -> AsyncIterator[Storage]:
    opened = open_storage("memory://")
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def dead_spool(directory: Path, rows: int) -> tuple[Path, list[str]]:
    """A process that spooled ``rows`` rows and died (its file closed, unlocked)."""
    gone = Spool(directory, "gw-dead")
    items = [Unwritten(build_row(), None) for _ in range(rows)]
    for item in items:
        assert gone.add(item)
    gone.close()
    assert gone.path is not None
    return gone.path, [item.row.request_id for item in items]


async def test_a_line_cut_off_is_set_aside_and_every_other_row_written(
    tmp_path: Path, storage: Storage
) -> None:
    path, ids = dead_spool(tmp_path, 4)
    lines = path.read_bytes().splitlines(keepends=True)
    cut = lines[1][: len(lines[1]) // 2]  # the second row cut off mid-line...
    with path.open("wb") as rewritten:  # ... as if a crash came mid-write, then more rows
        rewritten.writelines([lines[0], cut + lines[2], lines[3]])
    with path.open("ab") as torn:  # and the last append cut off too
        torn.write(Unwritten(build_row(), None).dump()[:50])

    adopter = Spool(tmp_path, "gw-new")
    assert adopter.adopt() == 2
    assert {item.row.request_id for item in adopter.pending} == {ids[0], ids[3]}
    assert await adopter.replay(storage) == 2
    for request_id in (ids[0], ids[3]):
        assert await storage.ledger_store.row(request_id) is not None
    assert not path.exists()  # written: not read and replayed again at the next start
    rejected = path.with_suffix(".rejected").read_bytes().splitlines()
    assert len(rejected) == 2
    assert rejected[0].startswith(cut)
    adopter.close()


async def test_a_live_spool_being_rewritten_is_never_adopted(
    tmp_path: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    live = Spool(tmp_path, "gw-live")
    first, second = Unwritten(build_row(), None), Unwritten(build_row(), None)
    assert live.add(first)
    assert live.add(second)
    await storage.ledger_store.append([first.row])  # the first is written...
    append = storage.ledger_store.append

    async def refuse_second(rows: Sequence[LedgerRow]) -> None:
        if second.row in rows:  # ... and storage refuses the second: the file is rewritten
            raise StorageError("refused")
        await append(rows)

    starting = Spool(tmp_path, "gw-starting")
    fsync = os.fsync
    rewriting: list[int] = []

    def adopt_meanwhile(fd: int) -> None:  # a gateway starts while the file is rewritten
        fsync(fd)
        if not rewriting:
            rewriting.append(starting.adopt())

    monkeypatch.setattr(spool.os, "fsync", adopt_meanwhile)
    monkeypatch.setattr(storage.ledger_store, "append", refuse_second)
    assert await live.replay(storage) == 1
    monkeypatch.undo()
    assert rewriting == [0]  # found locked: not taken

    third = Unwritten(build_row(), None)
    assert live.add(third)
    await starting.replay(storage)
    assert live.path is not None
    assert live.path.exists()  # the live process's rows are still on disk
    on_disk = [Unwritten.load(line).row.request_id for line in live.path.read_bytes().split()]
    assert on_disk == [second.row.request_id, third.row.request_id]
    live.close()
    starting.close()


def test_a_spool_directory_that_cannot_be_written_is_told_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL's spool defaults to a folder beside the config file, which is often
    read-only (a container's mounted config, a folder root owns): rows spooled there
    waited in memory alone, and nothing said so before an outage. The gateway says so when
    it starts, naming the folder."""
    blocked = tmp_path / "config-file"  # a file where the spool's parent folder should be
    blocked.write_text("")
    assert Spool(blocked / "spool", "gw").unwritable() is not None
    assert Spool(tmp_path / "spool", "gw").unwritable() is None

    def configure(data: dict[str, Any]) -> None:
        data["storage"]["spool_dir"] = str(blocked / "spool")

    caplog.set_level(logging.WARNING, logger="spendgate")
    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    harness.stop()
    [told] = [r for r in caplog.records if "spool directory cannot be written" in r.message]
    assert told.__dict__["path"] == str(blocked / "spool")


async def test_a_row_storage_refuses_for_good_is_set_aside_and_the_rest_written(
    tmp_path: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row the store will never take (a constraint or data error, not an outage) used to
    stop every replay at itself: the rows behind it waited for ever. It is set aside in
    ``<owner>.rejected`` (logged, counted) and the others written; an outage still stops."""
    items = [Unwritten(build_row(), None) for _ in range(3)]
    items[0] = Unwritten(items[0].row, "res-poison", (5,))  # never settled: fails first
    poison = items[0].row.request_id
    append = storage.ledger_store.append
    down = False

    async def refusing(rows: Sequence[LedgerRow]) -> None:
        if down:
            raise StorageError("storage is unavailable") from OSError("connection refused")
        if any(row.request_id == poison for row in rows):
            raise StorageError("cannot store row") from sqlite3.IntegrityError("CHECK failed")
        await append(rows)

    monkeypatch.setattr(storage.ledger_store, "append", refusing)
    live = Spool(tmp_path, "gw-live")
    for item in items:
        assert live.add(item)
    down = True  # an outage: nothing leaves the spool, nothing is set aside
    assert await live.replay(storage) == 0
    assert len(live) == 3
    assert live.rejected == 0
    down = False
    assert await live.replay(storage) == 3
    assert len(live) == 0
    assert live.rejected == 1
    for item in items[1:]:
        assert await storage.ledger_store.row(item.row.request_id) is not None
    assert await storage.ledger_store.row(poison) is None
    assert live.path is not None
    kept = live.path.with_suffix(".rejected").read_bytes().splitlines()
    assert [Unwritten.load(line).row.request_id for line in kept] == [poison]
    assert not live.path.exists()  # nothing left to replay (nor to write twice)
    assert live.reservations() == {"res-poison"}  # its lease lapses: never renewed for ever
    live.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_row_a_real_store_cannot_take_does_not_block_the_rows_behind_it(
    tmp_path: Path, backend: str
) -> None:
    """A count past 64 bits: SQLite raises OverflowError, asyncpg its client-side DataError
    (an InterfaceError, which PostgreSQL's `is_outage` takes for an outage)."""
    poison = Unwritten(build_row(input_tokens=2**63), None)
    items = [poison, *(Unwritten(build_row(), None) for _ in range(2))]
    with storage_url(backend, tmp_path) as url:
        store = open_storage(url)
        await store.open()
        try:
            live = Spool(tmp_path / "spool", "gw-live")
            for item in items:
                assert live.add(item)
            assert await live.replay(store) == 3
            assert len(live) == 0
            for item in items[1:]:
                assert await store.ledger_store.row(item.row.request_id) is not None
            assert live.path is not None
            kept = live.path.with_suffix(".rejected").read_bytes().splitlines()
            assert [Unwritten.load(line).row.request_id for line in kept] == [poison.row.request_id]
            live.close()
        finally:
            await store.close()


async def test_a_row_past_64_bits_is_set_aside_exactly_and_breaks_no_replay(
    tmp_path: Path, storage: Storage
) -> None:
    """orjson cannot write an integer of 2**64 or more: `Spool.add` raised TypeError with
    the row already kept in memory, and every later replay raised it again rewriting the
    file, breaking the lease keeper's tick each time. No store could take the row either:
    it is set aside in ``<owner>.rejected`` at once, every digit kept, its lease to lapse."""
    huge = Unwritten(build_row(output_tokens=2**64, cost_nanos=2**70), "res-huge", (2**70,))
    live = Spool(tmp_path, "gw-live")
    assert live.add(huge)  # on disk: set aside
    assert len(live) == 0
    assert live.rejected == 1
    assert live.reservations() == {"res-huge"}  # never renewed: the sweeper charges it
    assert live.path is not None
    (kept,) = live.path.with_suffix(".rejected").read_bytes().splitlines()
    record = json.loads(kept)
    assert record["reservation_id"] == "res-huge"
    assert record["amounts"] == [2**70]
    row = json.loads(record["row"])
    assert (row["request_id"], row["output_tokens"], row["cost_nanos"]) == (
        huge.row.request_id,
        2**64,
        2**70,
    )

    after = Unwritten(build_row(), None)
    assert live.add(after)
    assert await live.replay(storage) == 1
    assert await storage.ledger_store.row(after.row.request_id) is not None
    assert await storage.ledger_store.row(huge.row.request_id) is None
    assert not live.path.exists()
    live.close()
