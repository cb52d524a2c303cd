"""Keys in PostgreSQL: one indexed lookup per request (`key_by_hash`), writes in a
transaction each. Columns and their codec are those of the SQLite backend."""

from __future__ import annotations

from spendgate.clock import from_ms, to_ms
from spendgate.domain.identity import ApiKey
from spendgate.errors import StorageError
from spendgate.storage.base import RetiredKey
from spendgate.storage.postgres.database import Conn, PgDatabase
from spendgate.storage.postgres.sql import numbered
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

_INSERT = numbered(INSERT_KEY)
_UPDATE = numbered(UPDATE_KEY)
_BY_HASH = numbered(KEY_BY_HASH)
_BY_ID = numbered(KEY_BY_ID)
_BYTEWISE = 'ORDER BY created_at, id COLLATE "C"'  # ids sort as on SQLite, whatever the locale
_LIST = numbered(LIST_KEYS).replace("ORDER BY created_at, id", _BYTEWISE)
_LIST_ACTIVE = numbered(LIST_ACTIVE_KEYS).replace("ORDER BY created_at, id", _BYTEWISE)
_HASH_OF = "SELECT key_hash FROM api_keys WHERE id = $1 FOR UPDATE"
_RETIRE = """
INSERT INTO retired_key_hashes (key_hash, key_id, retired_ms) VALUES ($1, $2, $3)
ON CONFLICT (key_hash) DO UPDATE SET key_id = excluded.key_id, retired_ms = excluded.retired_ms
"""
_RETIRED = "SELECT key_id, retired_ms FROM retired_key_hashes WHERE key_hash = $1"


class PgKeys:
    remote = True  # a lookup is a round trip (`spendgate.services.keys.KeyService`)

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._decoded = DecodedKeys()  # the row is read every time; decoded when it changed

    async def insert_key(self, key: ApiKey) -> None:
        params = KEYS.params(key)
        await self._db.run(lambda conn: conn.execute(_INSERT, *params), f"key {key.id!r}")

    async def update_key(self, key: ApiKey) -> None:
        """Replace every field of the key with this id; StorageError if there is none. A
        hash it replaces is kept as retired, in the same transaction."""
        retired_ms = to_ms(self._db.clock.now())

        async def update(conn: Conn) -> None:
            old = await conn.fetchval(_HASH_OF, key.id)
            if old is None:
                raise StorageError(f"cannot store key {key.id!r}: it does not exist")
            await conn.execute(_UPDATE, *key_update_params(key))
            if old != key.key_hash:
                await conn.execute(_RETIRE, old, key.id, retired_ms)

        await self._db.transaction(update, f"key {key.id!r}")

    async def retired_key(self, key_hash: str) -> RetiredKey | None:
        row = await self._db.run(lambda conn: conn.fetchrow(_RETIRED, key_hash), "a key lookup")
        return None if row is None else RetiredKey(row[0], from_ms(row[1]))

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        row = await self._db.run(lambda conn: conn.fetchrow(_BY_HASH, key_hash), "a key lookup")
        return self._decoded.of(key_hash, None if row is None else tuple(row))

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        row = await self._db.run(lambda conn: conn.fetchrow(_BY_ID, key_id), "a key lookup")
        return None if row is None else KEYS.load(tuple(row))

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        """Keys oldest first; "revoked" means ``revoked_at`` is at or before the clock's now."""
        if include_revoked:
            rows = await self._db.run(lambda conn: conn.fetch(_LIST), "a key listing")
        else:
            now_ms = to_ms(self._db.clock.now())
            rows = await self._db.run(lambda conn: conn.fetch(_LIST_ACTIVE, now_ms), "keys")
        return [KEYS.load(tuple(row)) for row in rows]

    async def check(self) -> None:
        await self._db.check()
