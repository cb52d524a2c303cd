"""The ledger in memory: rows in insertion order and an index by request id; reports are
the domain's reference folds over the rows of a period."""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Sequence
from datetime import datetime

from spendgate.clock import from_ms, to_ms
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.refusals import (
    CallerModel,
    RefusalCombo,
    medians,
    output_samples,
    refusal_combos,
)
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
from spendgate.storage.memory.state import State


class MemoryLedger:
    def __init__(self, state: State) -> None:
        self._state = state
        self._rows: list[tuple[int, int, LedgerRow]] = []  # (ts_ms, sequence, row), sorted
        self._by_id: dict[str, LedgerRow] = {}
        self._sequence = 0

    def add(self, row: LedgerRow) -> bool:
        """Store a row unless its request id has one (no await: atomic on the loop)."""
        ts_ms = to_ms(row.ts)  # ValueError for a naive time, as every backend
        if row.request_id in self._by_id:
            return False
        kept = dataclasses.replace(row, ts=from_ms(ts_ms))
        self._sequence += 1
        bisect.insort(self._rows, (ts_ms, self._sequence, kept), key=lambda r: (r[0], r[1]))
        self._by_id[row.request_id] = kept
        return True

    def get(self, request_id: str) -> LedgerRow | None:
        return self._by_id.get(request_id)

    async def record(self, row: LedgerRow) -> None:
        self._state.require()
        if not self.add(row):
            raise StorageError(
                f"cannot store ledger row {row.request_id!r}: a row with this request_id exists"
            )

    async def append(self, rows: Sequence[LedgerRow]) -> list[bool]:
        self._state.require()
        return [self.add(row) for row in rows]

    async def row(self, request_id: str) -> LedgerRow | None:
        self._state.require()
        return self.get(request_id)

    def _between(self, since: datetime, until: datetime) -> list[LedgerRow]:
        low, high = to_ms(since), to_ms(until)
        start = bisect.bisect_left(self._rows, low, key=lambda r: r[0])
        end = bisect.bisect_left(self._rows, high, key=lambda r: r[0])
        return [row for _, _, row in self._rows[start:end]]

    async def ledger(
        self, since: datetime, until: datetime, *, limit: int | None = None
    ) -> list[LedgerRow]:
        self._state.require()
        rows = self._between(since, until)
        return rows if limit is None else rows[:limit]

    async def latest_of_key(self, key_id: str, limit: int) -> list[LedgerRow]:
        self._state.require()
        rows = [row for _, _, row in reversed(self._rows) if row.key_id == key_id]
        return rows[:limit]

    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        self._state.require()
        return usage_totals(self._between(query.since, query.until), query.group_by)

    async def usage_series(
        self, since: datetime, until: datetime, bucket: Bucket, group_by: GroupBy
    ) -> list[UsagePoint]:
        self._state.require()
        return usage_series(self._between(since, until), group_by, bucket)

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        self._state.require()
        return block_totals(self._between(since, until))

    async def marked(self, since: datetime, until: datetime) -> list[LedgerRow]:
        self._state.require()
        return [r for r in self._between(since, until) if r.blocked_by or r.settled_above]

    async def savings(
        self, since: datetime, until: datetime, by: SavingsBy
    ) -> tuple[list[SavingsGroup], list[ShadowSavings]]:
        self._state.require()
        folded = savings(self._between(since, until), by)
        return list(folded.groups), list(folded.shadow)

    async def recent_outputs(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, list[int]]:
        self._state.require()
        return output_samples(self._between(since, until), pairs, limit)

    async def output_medians(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, int]:
        return medians(await self.recent_outputs(pairs, since, until, limit))

    async def refusals(self, since: datetime, until: datetime) -> list[RefusalCombo]:
        self._state.require()
        return refusal_combos(self._between(since, until))

    async def check(self) -> None:
        self._state.require()
