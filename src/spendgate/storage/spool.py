"""Rows that storage would not take when their request ended, kept on local disk until it
does: the ledger's waiting room.

A request that reached a provider ends by writing its ledger row (settling its lease in
the same step). When that write fails (the disk is full, the database locked or gone),
the row goes here: appended to this process's spool file and fsynced, so a crash does not
lose it either. The lease keeper replays the spool on every tick: each row is written
(`Storage.settle` for a row that settles a lease, `Ledger.append` for one without), both
idempotent by id, so a row lands exactly once however often the replay is interrupted.
While a row waits, its lease is *not* renewed (`reservations`): if the replay cannot
write it in time, the lease lapses and any gateway's sweeper charges the request its
worst case instead, conservatively and flagged; the late replay then finds the request
settled and drops the row.

Each process writes only its own file (``<owner>.jsonl`` in the spool directory, held
under an exclusive ``flock`` while the process lives); files of processes that died are
adopted by whichever gateway locks them first (a line that does not read back, cut off by
a crash, is set aside in ``<owner>.rejected``). When the spool file cannot be written
either (the same full disk), the row waits in memory only, and its lapsing lease is the
durable trace.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import orjson

from spendgate.domain.ledger import LedgerRow
from spendgate.errors import StorageError
from spendgate.storage.codec import dump_template, dump_template_exact, load_template

if TYPE_CHECKING:
    from spendgate.storage.stores import Storage

log = logging.getLogger("spendgate.storage.spool")

SUFFIX = ".jsonl"


@dataclass(frozen=True, slots=True)
class Unwritten:
    """A row storage did not take, and the lease it settles (with what each counter is
    charged), if it has one."""

    row: LedgerRow
    reservation_id: str | None
    amounts: tuple[int, ...] = ()

    def dump(self) -> bytes:
        """One line of a spool file. Raises TypeError for a row orjson cannot write (an
        integer past 64 bits: `exact` writes it, for the ``.rejected`` file only)."""
        return orjson.dumps(
            {
                "row": dump_template(self.row),
                "reservation_id": self.reservation_id,
                "amounts": list(self.amounts),
            }
        )

    def exact(self) -> bytes:
        """`dump`, for any row: every integer written exactly, also one past 64 bits
        (which `load` would read back as a float: fit to be kept aside, not replayed)."""
        try:
            return self.dump()
        except TypeError:
            pass
        return json.dumps(
            {
                "row": dump_template_exact(self.row),
                "reservation_id": self.reservation_id,
                "amounts": list(self.amounts),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def load(cls, line: bytes) -> Unwritten:
        data = orjson.loads(line)
        return cls(load_template(data["row"]), data["reservation_id"], tuple(data["amounts"]))


class Spool:
    """One process's spool (see the module docstring). ``directory`` None: memory only."""

    def __init__(self, directory: Path | None, owner: str) -> None:
        self.directory = directory
        self.owner = owner
        self._pending: dict[str, Unwritten] = {}  # by request id, oldest first
        self._file: IO[bytes] | None = None
        self._adopted: list[Path] = []  # spool files of dead processes, taken over
        self.rejected = 0  # rows storage refused for good, set aside (see `replay`)
        self._refused_leases: set[str] = set()  # their leases: left to lapse, never renewed

    @property
    def path(self) -> Path | None:
        return None if self.directory is None else self.directory / f"{self.owner}{SUFFIX}"

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def pending(self) -> list[Unwritten]:
        return list(self._pending.values())

    def reservations(self) -> frozenset[str]:
        """Leases whose rows wait here, or were set aside as refused: not to be renewed
        (they lapse if not written, and the sweeper charges their worst case)."""
        waiting = {u.reservation_id for u in self._pending.values() if u.reservation_id}
        return frozenset(waiting | self._refused_leases)

    # -- in ------------------------------------------------------------------------------

    def add(self, item: Unwritten) -> bool:
        """Keep ``item`` until storage takes it; whether it is on disk (else in memory).

        A row with an integer past 64 bits (an absurd count or cost) cannot be written
        to the spool file, nor taken by any store (SQLite's and PostgreSQL's integers
        stop at 2**63 - 1): it is set aside in ``<owner>.rejected`` at once, exactly, its
        lease left to lapse (charged its worst case by the sweeper), as `replay` does
        with a row storage refuses. It used to stay in memory and make every replay's
        rewrite of the file raise, breaking the lease keeper's tick each time."""
        try:
            line = item.dump()
        except TypeError as exc:  # orjson.JSONEncodeError
            if self._set_aside(item, exc):
                return True
            self._pending[item.row.request_id] = item  # nowhere durable: memory only
            return False
        self._pending[item.row.request_id] = item
        try:
            handle = self._open()
            if handle is None:
                return False
            handle.write(line + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        except OSError as exc:
            log.error(
                "cannot write the spool; the row waits in memory and its lease will lapse",
                extra={"request_id": item.row.request_id, "error": str(exc)},
            )
            return False
        return True

    def _open(self) -> IO[bytes] | None:
        path = self.path
        if path is None:
            return None
        if self._file is None:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle = private(path, os.O_APPEND)
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            self._file = handle
        return self._file

    def unwritable(self) -> str | None:
        """Why rows could not be spooled on disk here (the directory cannot be made or
        written: a read-only mount, a config folder the gateway's user does not own), or
        None if they can. Asked at start: otherwise only an outage would tell, its rows
        then waiting in memory alone."""
        if self.directory is None:
            return None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.directory):
                pass
        except OSError as exc:
            return str(exc)
        return None

    def adopt(self) -> int:
        """Take over the spool files of processes that died (unlocked ones), and this
        process's own from before (none, unless it reuses an owner); how many rows."""
        if self.directory is None or not self.directory.is_dir():
            return 0
        found = 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path == self.path or path in self._adopted:
                continue
            try:
                with path.open("rb") as handle:
                    try:
                        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live gateway's own: it replays it itself
                    if os.fstat(handle.fileno()).st_ino != path.stat().st_ino:
                        continue  # replaced since it was opened: its owner lives
                    found += self._load(path, handle.read())
            except FileNotFoundError:
                continue  # removed since it was listed: its rows are written
            except OSError as exc:
                log.error("cannot read a spool file", extra={"path": str(path), "error": str(exc)})
                continue
            self._adopted.append(path)
        return found

    def _load(self, path: Path, data: bytes) -> int:
        """The rows of an adopted file; a line that does not read back (a write cut off
        by a crash, or by a full disk) is set aside in ``<file>.rejected`` beside it, and
        the rows around it are adopted all the same."""
        found = 0
        rejected: list[bytes] = []
        for number, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                item = Unwritten.load(line)
            except (ValueError, KeyError, TypeError) as exc:
                log.error(
                    "a spool line does not read back; set aside",
                    extra={"path": str(path), "line": number, "error": str(exc)},
                )
                rejected.append(line)
                continue
            self._pending.setdefault(item.row.request_id, item)
            found += 1
        if rejected:
            _keep_rejected(path, rejected)
        return found

    # -- out -----------------------------------------------------------------------------

    async def replay(self, storage: Storage) -> int:
        """Write what storage takes now, oldest first; stop at its first failure (an
        outage: the rows behind wait for the next tick). A row storage refuses for good (a
        constraint or data error, see `refused`) is set aside in ``<owner>.rejected`` and
        the replay goes on: one such row must not block every row behind it for ever. How
        many rows left the spool (written, found already settled, or set aside)."""
        done = 0
        for item in list(self._pending.values()):
            try:
                await _write(storage, item)
            except StorageError as exc:
                if not refused(exc) or not self._set_aside(item, exc):
                    break
            del self._pending[item.row.request_id]
            done += 1
        if done:
            self._compact()
        return done

    def _set_aside(self, item: Unwritten, error: Exception) -> bool:
        """Keep a refused row in ``<owner>.rejected`` (fsynced, before it leaves the
        spool); whether it is there (else it stays in the spool, blocking as before)."""
        log.error(
            "storage refuses a spooled row for good; set aside in the spool's .rejected file",
            extra={"request_id": item.row.request_id, "error": str(error)},
        )
        self.rejected += 1
        path = self.path
        if path is None:
            return False  # memory only: nowhere durable to keep it
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # (`add`: maybe first)
            _keep_rejected(path, [item.exact()])
        except OSError as exc:
            log.error("cannot set a refused row aside", extra={"error": str(exc)})
            return False
        if item.reservation_id is not None:
            self._refused_leases.add(item.reservation_id)
        return True

    def _compact(self) -> None:
        """Rewrite this process's file with what still waits (or remove it), then drop the
        adopted files, whose rows are written or now in this process's file."""
        path = self.path
        if path is not None:
            try:
                self._rewrite(path, self._pending.values())
            except OSError as exc:
                log.error("cannot rewrite the spool", extra={"error": str(exc)})
                return
        for adopted in self._adopted:
            with contextlib.suppress(FileNotFoundError):
                adopted.unlink()
        self._adopted.clear()

    def _rewrite(self, path: Path, items: Iterable[Unwritten]) -> None:
        """Replace the file with ``items``. It stays locked throughout (the new file is
        locked before it takes the old one's place, and the old one unlocked only after):
        a gateway starting meanwhile must never find it unlocked and adopt it, or it
        would remove this live process's file once it had written the rows."""
        lines = [line + b"\n" for line in _lines(items)]
        if not lines:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            self.close()
            return
        fresh = path.with_suffix(".tmp")
        handle = private(fresh, os.O_TRUNC)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            handle.writelines(lines)
            handle.flush()
            os.fsync(handle.fileno())
            fresh.replace(path)
        except BaseException:
            handle.close()
            raise
        self.close()
        self._file = handle

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


# Errors that say the row itself is refused (a constraint, a value out of range), however
# often it is sent again: not an outage. Anything else stops the replay, to be retried.
# ValueError and OverflowError: a value the driver cannot encode (an integer past 64 bits,
# on both backends; asyncpg's client-side DataError is a ValueError, and an InterfaceError,
# which PostgreSQL's `is_outage` otherwise counts as one).
_REFUSED: tuple[type[BaseException], ...] = (
    sqlite3.IntegrityError,
    sqlite3.DataError,
    ValueError,
    OverflowError,
)


def _refused_types() -> tuple[type[BaseException], ...]:
    """`_REFUSED`, with asyncpg's where a PostgreSQL store has loaded it (no asyncpg error
    can exist otherwise, and a gateway on SQLite does not import it)."""
    asyncpg = sys.modules.get("asyncpg")
    if asyncpg is None:
        return _REFUSED
    return (*_REFUSED, asyncpg.IntegrityConstraintViolationError, asyncpg.DataError)


def refused(error: BaseException) -> bool:
    """Whether ``error`` (a StorageError) was caused by storage refusing the row itself."""
    kinds = _refused_types()
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, kinds):
            return True
        cause = cause.__cause__
    return False


async def _write(storage: Storage, item: Unwritten) -> None:
    """One row, exactly once: settle its lease with it, or (no lease, or the lease already
    ended: lapsed and swept, or settled after all) append it unless a row is there."""
    if item.reservation_id is not None and await storage.settle(
        item.reservation_id, item.amounts, item.row
    ):
        return
    if await storage.ledger_store.row(item.row.request_id) is None:
        await storage.ledger_store.append([item.row])


def _lines(items: Iterable[Unwritten]) -> list[bytes]:
    """The spool file's lines for ``items``; one that cannot be written (a row `add`
    could not set aside) stays out of the file, waiting in memory only."""
    lines = []
    for item in items:
        try:
            lines.append(item.dump())
        except TypeError:
            continue
    return lines


def _keep_rejected(path: Path, lines: list[bytes]) -> None:
    """Append ``lines`` to the ``.rejected`` file beside the spool file ``path``, fsynced
    (a line cut off by a crash, a row storage refuses for good)."""
    with private(path.with_suffix(".rejected"), os.O_APPEND) as kept:
        kept.writelines(line + b"\n" for line in lines)
        kept.flush()
        os.fsync(kept.fileno())


def private(path: Path, flag: int) -> IO[bytes]:
    """``path`` opened for writing (``flag``: `os.O_APPEND` or `os.O_TRUNC`), created
    readable by its owner only (0600: spooled rows name keys, users and costs); a file
    that exists keeps its mode."""
    return os.fdopen(
        os.open(path, os.O_WRONLY | os.O_CREAT | flag, 0o600), "ab" if flag == os.O_APPEND else "wb"
    )
