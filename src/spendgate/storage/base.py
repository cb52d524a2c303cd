"""The storage interface every backend implements (SQLite now; PostgreSQL and Redis later).

Durability contract of `Storage.record`: when the awaitable returns, the row survives a
crash of the gateway process (``kill -9``). It does not promise to survive a power loss or
kernel crash unless the backend says so (SQLite: ``synchronous=NORMAL`` in WAL mode, so
commits reach the OS but are not fsynced one by one).
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.totals import GroupBy, UsageGroup, UsageQuery

__all__ = ["GroupBy", "Storage", "UsageGroup", "UsageQuery"]


class Storage(Protocol):
    async def open(self) -> None:
        """Connect and apply pending migrations."""
        ...

    async def close(self) -> None:
        """Flush every pending write, then release connections."""
        ...

    async def insert_key(self, key: ApiKey) -> None: ...

    async def update_key(self, key: ApiKey) -> None:
        """Replace the stored key with the same id (revoke, rotate)."""
        ...

    async def key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def key_by_id(self, key_id: str) -> ApiKey | None: ...

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]: ...

    async def record(self, row: LedgerRow) -> None:
        """Append a ledger row; returns once the row would survive ``kill -9``."""
        ...

    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        """Totals per group over ``[since, until)``, highest cost first."""
        ...

    async def ledger(
        self, since: datetime, until: datetime, *, limit: int | None = None
    ) -> list[LedgerRow]:
        """Rows over ``[since, until)``, oldest first."""
        ...
