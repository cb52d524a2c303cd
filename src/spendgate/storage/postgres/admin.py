"""Admin tokens and the audit log in PostgreSQL (migration 0003): the SQLite backend's
columns, statements and codecs (`spendgate.storage.sqlite.admin`), placeholders numbered."""

from __future__ import annotations

from spendgate.domain.audit import AuditEntry, AuditQuery
from spendgate.domain.roles import AdminToken
from spendgate.errors import StorageError
from spendgate.storage.postgres.database import PgDatabase
from spendgate.storage.postgres.sql import numbered
from spendgate.storage.sqlite.admin import (
    INSERT_ADMIN,
    INSERT_AUDIT,
    SELECT_ADMIN,
    UPDATE_ADMIN,
    admin_params,
    audit_select,
    entry_params,
    load_admin,
    load_entry,
)

_INSERT = numbered(INSERT_ADMIN)
_UPDATE = numbered(UPDATE_ADMIN)
_BY_HASH = numbered(f"{SELECT_ADMIN} WHERE token_hash = ?")
_BY_ID = numbered(f"{SELECT_ADMIN} WHERE id = ?")
_LIST = f'{SELECT_ADMIN} ORDER BY created_at, id COLLATE "C"'  # ids sort as on SQLite
_APPEND = numbered(INSERT_AUDIT)


class PgAdmin:
    """Both admin roles (`spendgate.storage.admin`) on one PostgreSQL database."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    async def insert_token(self, token: AdminToken) -> None:
        params = admin_params(token)
        await self._db.run(lambda conn: conn.execute(_INSERT, *params), f"admin token {token.id!r}")

    async def update_token(self, token: AdminToken) -> None:
        params = [*admin_params(token)[1:], token.id]
        status = await self._db.run(
            lambda conn: conn.execute(_UPDATE, *params), f"admin token {token.id!r}"
        )
        if status != "UPDATE 1":
            raise StorageError(f"cannot store admin token {token.id!r}: it does not exist")

    async def token_by_hash(self, token_hash: str) -> AdminToken | None:
        row = await self._db.run(lambda conn: conn.fetchrow(_BY_HASH, token_hash), "a token lookup")
        return None if row is None else load_admin(tuple(row))

    async def token_by_id(self, token_id: str) -> AdminToken | None:
        row = await self._db.run(lambda conn: conn.fetchrow(_BY_ID, token_id), "a token lookup")
        return None if row is None else load_admin(tuple(row))

    async def list_tokens(self) -> list[AdminToken]:
        rows = await self._db.run(lambda conn: conn.fetch(_LIST), "a token listing")
        return [load_admin(tuple(row)) for row in rows]

    async def append_audit(self, entry: AuditEntry) -> None:
        params = entry_params(entry)
        await self._db.run(lambda conn: conn.execute(_APPEND, *params), f"audit {entry.id!r}")

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        sql, params = audit_select(query)
        rows = await self._db.run(lambda conn: conn.fetch(numbered(sql), *params), "the audit")
        return [load_entry(tuple(row)) for row in rows]
