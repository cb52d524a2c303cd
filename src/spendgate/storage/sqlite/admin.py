"""Admin tokens and the audit log in SQLite (migration 0013): writes through the writer,
token lookups on the event-loop reader, audit queries on the report thread. The statements
and codecs are public: another SQL backend uses them as they are (``?`` numbered)."""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from spendgate.clock import from_ms, to_ms
from spendgate.domain.audit import AuditAction, AuditEntry, AuditQuery
from spendgate.domain.roles import AdminToken, Role
from spendgate.errors import StorageError
from spendgate.storage.sqlite.file import SqliteFile

# (constant column lists, never a value: S608 does not apply)
ADMIN_COLUMNS = (
    "id, token_hash, hint, name, role, team, created_at, created_by, expires_at, revoked_at"
)
INSERT_ADMIN = f"INSERT INTO admin_tokens ({ADMIN_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"  # noqa: S608
UPDATE_ADMIN = (
    "UPDATE admin_tokens SET token_hash=?, hint=?, name=?, role=?, team=?, created_at=?, "
    "created_by=?, expires_at=?, revoked_at=? WHERE id=?"
)
SELECT_ADMIN = f"SELECT {ADMIN_COLUMNS} FROM admin_tokens"  # noqa: S608
AUDIT_COLUMNS = "id, at_ms, actor, role, action, target, team, before_json, after_json"
INSERT_AUDIT = f"INSERT INTO audit_log ({AUDIT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?)"  # noqa: S608


def _opt_ms(value: Any) -> int | None:
    return None if value is None else to_ms(value)


def admin_params(token: AdminToken) -> list[Any]:
    return [
        token.id,
        token.token_hash,
        token.hint,
        token.name,
        token.role.value,
        token.team,
        to_ms(token.created_at),
        token.created_by,
        _opt_ms(token.expires_at),
        _opt_ms(token.revoked_at),
    ]


def load_admin(row: tuple[Any, ...]) -> AdminToken:
    return AdminToken(
        id=row[0],
        token_hash=row[1],
        hint=row[2],
        name=row[3],
        role=Role(row[4]),
        team=row[5],
        created_at=from_ms(row[6]),
        created_by=row[7],
        expires_at=None if row[8] is None else from_ms(row[8]),
        revoked_at=None if row[9] is None else from_ms(row[9]),
    )


def _dump(value: dict[str, Any] | None) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _load(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    value: dict[str, Any] = orjson.loads(text)
    return value


def load_entry(row: tuple[Any, ...]) -> AuditEntry:
    return AuditEntry(
        id=row[0],
        at=from_ms(row[1]),
        actor=row[2],
        role=row[3],
        action=AuditAction(row[4]),
        target=row[5],
        team=row[6],
        before=_load(row[7]),
        after=_load(row[8]),
    )


def entry_params(entry: AuditEntry) -> list[Any]:
    return [
        entry.id,
        to_ms(entry.at),
        entry.actor,
        entry.role,
        entry.action.value,
        entry.target,
        entry.team,
        _dump(entry.before),
        _dump(entry.after),
    ]


def audit_select(query: AuditQuery) -> tuple[str, list[Any]]:
    """The SELECT of `AuditQuery` (`AuditQuery.matches` is the reference)."""
    where: list[str] = []
    params: list[Any] = []
    if query.since is not None:
        where.append("at_ms >= ?")
        params.append(to_ms(query.since))
    if query.until is not None:
        where.append("at_ms < ?")
        params.append(to_ms(query.until))
    for column, value in (
        ("actor", query.actor),
        ("action", query.action.value if query.action else None),
        ("team", query.team_only),
    ):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    params.append(query.limit)
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log{clause} ORDER BY at_ms DESC, seq DESC LIMIT ?"  # noqa: S608
    return sql, params


class SqliteAdmin:
    """Both admin roles (`spendgate.storage.admin`) on one SQLite file."""

    def __init__(self, file: SqliteFile) -> None:
        self._file = file

    async def insert_token(self, token: AdminToken) -> None:
        await self._file.write(INSERT_ADMIN, admin_params(token), f"admin token {token.id!r}")

    async def update_token(self, token: AdminToken) -> None:
        params = [*admin_params(token)[1:], token.id]

        def update(conn: sqlite3.Connection) -> None:
            if conn.execute(UPDATE_ADMIN, params).rowcount != 1:
                raise StorageError(f"cannot store admin token {token.id!r}: it does not exist")

        await self._file.submit(update, f"admin token {token.id!r}")

    async def token_by_hash(self, token_hash: str) -> AdminToken | None:
        rows = self._file.read(f"{SELECT_ADMIN} WHERE token_hash = ?", (token_hash,))
        return load_admin(rows[0]) if rows else None

    async def token_by_id(self, token_id: str) -> AdminToken | None:
        rows = self._file.read(f"{SELECT_ADMIN} WHERE id = ?", (token_id,))
        return load_admin(rows[0]) if rows else None

    async def list_tokens(self) -> list[AdminToken]:
        rows = self._file.read(f"{SELECT_ADMIN} ORDER BY created_at, id", ())
        return [load_admin(row) for row in rows]

    async def append_audit(self, entry: AuditEntry) -> None:
        params = entry_params(entry)
        await self._file.write(INSERT_AUDIT, params, f"audit entry {entry.id!r}")

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        sql, params = audit_select(query)

        def select(conn: sqlite3.Connection) -> list[AuditEntry]:
            return [load_entry(row) for row in conn.execute(sql, params).fetchall()]

        try:
            return await self._file.report(select)
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite audit query failed: {exc}") from exc
