"""One team's share of a `Storage`: what a team admin's (or a team viewer's) reports read.

`team_storage` binds the same counters with a ledger and a key store that show only the
rows and keys of one team, so that every report (`spendgate.services.reports`,
`spendgate.services.savings`) runs unchanged on that team's data. The ledger's totals are
folded here from the team's rows by the same pure folds the backends are checked against
(`spendgate.domain.totals`, `spendgate.domain.savings`): a full scan of the period, which
is fine for an admin's report and never on the request path. Read-only: writes go to the
whole storage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.refusals import CallerModel, RefusalCombo, medians, refusal_combos
from spendgate.domain.savings import SavingsBy, SavingsGroup, ShadowSavings, savings
from spendgate.domain.totals import (
    BlockGroup,
    Bucket,
    GroupBy,
    UsageGroup,
    UsagePoint,
    UsageQuery,
    block_totals,
    usage_series,
    usage_totals,
)
from spendgate.errors import StorageError
from spendgate.storage.base import KeyStore, Ledger, RetiredKey
from spendgate.storage.stores import Storage


def _read_only() -> StorageError:
    return StorageError("a team's view of the storage is read-only")


class TeamLedger:
    """The rows of one team (``LedgerRow.team``): every read of `Ledger`, filtered."""

    def __init__(self, inner: Ledger, team: str) -> None:
        self._inner = inner
        self._team = team

    async def _rows(self, since: datetime, until: datetime) -> list[LedgerRow]:
        return [row for row in await self._inner.ledger(since, until) if row.team == self._team]

    async def record(self, row: LedgerRow) -> None:
        raise _read_only()

    async def append(self, rows: Sequence[LedgerRow]) -> list[bool]:
        raise _read_only()

    async def row(self, request_id: str) -> LedgerRow | None:
        row = await self._inner.row(request_id)
        return row if row is not None and row.team == self._team else None

    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        return usage_totals(await self._rows(query.since, query.until), query.group_by)

    async def usage_series(
        self, since: datetime, until: datetime, bucket: Bucket, group_by: GroupBy
    ) -> list[UsagePoint]:
        return usage_series(await self._rows(since, until), group_by, bucket)

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        return block_totals(await self._rows(since, until))

    async def marked(self, since: datetime, until: datetime) -> list[LedgerRow]:
        return [r for r in await self._inner.marked(since, until) if r.team == self._team]

    async def recent_outputs(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, list[int]]:
        # output sizes only (no identity, no cost), for estimating the team's refusals
        return await self._inner.recent_outputs(pairs, since, until, limit)

    async def output_medians(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, int]:
        return medians(await self.recent_outputs(pairs, since, until, limit))

    async def refusals(self, since: datetime, until: datetime) -> list[RefusalCombo]:
        return refusal_combos(await self.marked(since, until))

    async def savings(
        self, since: datetime, until: datetime, by: SavingsBy
    ) -> tuple[list[SavingsGroup], list[ShadowSavings]]:
        folded = savings(await self._rows(since, until), by)
        return list(folded.groups), list(folded.shadow)

    async def ledger(
        self, since: datetime, until: datetime, *, limit: int | None = None
    ) -> list[LedgerRow]:
        rows = await self._rows(since, until)
        return rows if limit is None else rows[:limit]

    async def latest_of_key(self, key_id: str, limit: int) -> list[LedgerRow]:
        rows = await self._inner.latest_of_key(key_id, limit)
        return [row for row in rows if row.team == self._team]

    async def check(self) -> None:
        await self._inner.check()


class TeamKeys:
    """The keys of one team (``ApiKey.team``)."""

    def __init__(self, inner: KeyStore, team: str) -> None:
        self._inner = inner
        self._team = team

    def _mine(self, key: ApiKey | None) -> ApiKey | None:
        return key if key is not None and key.team == self._team else None

    async def insert_key(self, key: ApiKey) -> None:
        raise _read_only()

    async def update_key(self, key: ApiKey) -> None:
        raise _read_only()

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        return self._mine(await self._inner.key_by_hash(key_hash))

    async def retired_key(self, key_hash: str) -> RetiredKey | None:
        return None

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        return self._mine(await self._inner.key_by_id(key_id))

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        found = await self._inner.list_keys(include_revoked=include_revoked)
        return [key for key in found if key.team == self._team]

    async def check(self) -> None:
        await self._inner.check()


def team_storage(storage: Storage, team: str) -> Storage:
    """``storage`` as one team sees it (reads only; nothing to open or close)."""
    return Storage(
        TeamKeys(storage.key_store, team),
        TeamLedger(storage.ledger_store, team),
        storage.counter_store,
    )
