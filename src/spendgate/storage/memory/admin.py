"""Admin tokens and the audit log in memory (tests; nothing survives the process)."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from spendgate.clock import from_ms, to_ms
from spendgate.domain.audit import AuditEntry, AuditQuery
from spendgate.domain.roles import AdminToken
from spendgate.errors import StorageError
from spendgate.storage.memory.state import State


def _ms(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_ms(to_ms(moment))


def _stored(token: AdminToken) -> AdminToken:
    """As a database gives it back: times to the millisecond, in UTC."""
    created = _ms(token.created_at)
    assert created is not None
    expires, revoked = _ms(token.expires_at), _ms(token.revoked_at)
    return dataclasses.replace(token, created_at=created, expires_at=expires, revoked_at=revoked)


class MemoryAdmin:
    def __init__(self, state: State) -> None:
        self._state = state
        self._tokens: dict[str, AdminToken] = {}
        self._audit: list[AuditEntry] = []

    async def insert_token(self, token: AdminToken) -> None:
        self._state.require()
        if token.id in self._tokens:
            raise StorageError(f"cannot store admin token {token.id!r}: its id is taken")
        if any(t.token_hash == token.token_hash for t in self._tokens.values()):
            raise StorageError(f"cannot store admin token {token.id!r}: its hash is taken")
        self._tokens[token.id] = _stored(token)

    async def update_token(self, token: AdminToken) -> None:
        self._state.require()
        if token.id not in self._tokens:
            raise StorageError(f"cannot store admin token {token.id!r}: it does not exist")
        self._tokens[token.id] = _stored(token)

    async def token_by_hash(self, token_hash: str) -> AdminToken | None:
        self._state.require()
        return next((t for t in self._tokens.values() if t.token_hash == token_hash), None)

    async def token_by_id(self, token_id: str) -> AdminToken | None:
        self._state.require()
        return self._tokens.get(token_id)

    async def list_tokens(self) -> list[AdminToken]:
        self._state.require()
        return sorted(self._tokens.values(), key=lambda t: (t.created_at, t.id))

    async def append_audit(self, entry: AuditEntry) -> None:
        self._state.require()
        at = _ms(entry.at)
        assert at is not None
        self._audit.append(dataclasses.replace(entry, at=at))

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        self._state.require()
        found = [e for e in self._audit if query.matches(e)]
        found.reverse()  # newest written first among equal times (a stable sort keeps it)
        found.sort(key=lambda e: e.at, reverse=True)
        return found[: query.limit]
