"""The storage roles of the admin API's own records: admin tokens and the audit log.

Beside the three roles of `spendgate.storage.base`, and as small: a backend that keeps keys
and the ledger keeps these too (SQLite, memory), bound into `Storage` as its ``admin``.

* `AdminTokenStore`: admin tokens, looked up by hash (never a secret: only its SHA-256).
* `AuditLog`: append-only entries of every admin change; an append returns once the entry
  would survive ``kill -9`` (the contract of `spendgate.storage.base`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from spendgate.domain.audit import AuditEntry, AuditQuery
from spendgate.domain.roles import AdminToken


class AdminTokenStore(Protocol):
    async def insert_token(self, token: AdminToken) -> None: ...

    async def update_token(self, token: AdminToken) -> None:
        """Replace the stored token with the same id (a revocation); StorageError if none."""
        ...

    async def token_by_hash(self, token_hash: str) -> AdminToken | None: ...

    async def token_by_id(self, token_id: str) -> AdminToken | None: ...

    async def list_tokens(self) -> list[AdminToken]:
        """Every token, revoked and expired ones included, oldest first."""
        ...


class AuditLog(Protocol):
    async def append_audit(self, entry: AuditEntry) -> None:
        """Append one entry; returns once it would survive ``kill -9``."""
        ...

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """The entries `AuditQuery.matches`, newest first (ties: the later written first),
        at most ``query.limit``."""
        ...


@dataclass(frozen=True, slots=True)
class AdminStores:
    tokens: AdminTokenStore
    audit: AuditLog
