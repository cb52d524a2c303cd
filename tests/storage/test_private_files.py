"""The files the gateway creates hold key hashes, users and costs: the SQLite database (and
its -wal/-shm), spool files and rejected spool lines are created 0600, and directories it
creates 0700, whatever the umask; a file the operator created beforehand keeps its mode."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from storage_samples import build_row

from spendgate.storage.spool import Spool, Unwritten
from spendgate.storage.sqlite.connection import connect


@pytest.fixture(autouse=True)
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual default: files world-readable
    yield
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_new_database_and_its_wal_are_private(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.db"
    conn = connect(str(path))
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert mode(path) == 0o600
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        assert side.exists()
        assert mode(side) == 0o600
    conn.close()


def test_a_database_made_by_the_operator_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.db"
    path.touch()
    path.chmod(0o640)
    connect(str(path)).close()
    assert mode(path) == 0o640


def test_spool_files_and_directories_are_private(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", "gw-dead")
    assert spool.add(Unwritten(build_row(), None))
    spool.close()
    assert spool.path is not None
    assert mode(spool.path) == 0o600
    assert mode(tmp_path / "spool") == 0o700
    with spool.path.open("ab") as torn:
        torn.write(b"{not json\n")
    adopter = Spool(tmp_path / "spool", "gw-new")
    assert adopter.adopt() == 1
    rejected = spool.path.with_suffix(".rejected")
    assert mode(rejected) == 0o600
    adopter.close()


def test_a_row_set_aside_is_kept_private(tmp_path: Path) -> None:
    """A row storage refuses for good (here one past 64 bits, which no store takes) is
    set aside in ``<owner>.rejected``: it was opened with the umask's mode (0644 under
    the usual 022), while the rejected lines of an adopted file were made 0600."""
    umask = os.umask(0o022)
    try:
        spool = Spool(tmp_path / "spool", "gw-live")
        assert spool.add(Unwritten(build_row(output_tokens=2**64), None))
        assert spool.path is not None
        assert mode(spool.path.with_suffix(".rejected")) == 0o600
        spool.close()
    finally:
        os.umask(umask)
