"""The storage interface every backend implements (SQLite now; PostgreSQL and Redis later).

Durability contract of `Storage.record`: when the awaitable returns, the row survives a
crash of the gateway process (``kill -9``). It does not promise to survive a power loss or
kernel crash unless the backend says so (SQLite: ``synchronous=NORMAL`` in WAL mode, so
commits reach the OS but are not fsynced one by one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase
from spendgate.domain.budgets import CounterRef, RequestCap
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.savings import SavingsBy, SavingsGroup, ShadowSavings
from spendgate.domain.totals import BlockGroup, GroupBy, UsageGroup, UsageQuery

__all__ = [
    "BudgetOverride",
    "GroupBy",
    "ReservationPlan",
    "Storage",
    "UsageGroup",
    "UsageQuery",
]


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """Everything `Storage.reserve` needs to decide and record one reservation atomically."""

    reservation_id: str  # the request id
    owner: str  # the gateway process that holds the lease
    expires_at: datetime  # lease expiry; renewed while the request runs
    counters: tuple[CounterRef, ...]
    worst: WorstCase
    caps: tuple[RequestCap, ...]
    min_output: int
    template: LedgerRow  # identity fields for the row written if the lease lapses


@dataclass(frozen=True, slots=True)
class BudgetOverride:
    budget: str
    limit: int  # in the budget's unit
    expires_at: datetime | None  # None: until changed again
    created_at: datetime


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

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        """Per budget, limit or breaker over ``[since, until)``: the requests it refused and
        their worst-case cost, and (shadow limits) the requests it would have refused."""
        ...

    async def savings(
        self, since: datetime, until: datetime, by: SavingsBy
    ) -> tuple[list[SavingsGroup], list[ShadowSavings]]:
        """What routing saved over ``[since, until)``: per team or service (unordered) and
        per shadow rule (by name), as `spendgate.domain.savings.savings` folds it."""
        ...

    async def ledger(
        self, since: datetime, until: datetime, *, limit: int | None = None
    ) -> list[LedgerRow]:
        """Rows over ``[since, until)``, oldest first."""
        ...

    # ---- budgets: reservations are atomic across every counter, and durable leases ----

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        """In one transaction: read every counter (with its effective limit), run
        `spendgate.domain.admission.decide`, and if admitted add each amount to the counter's
        reserved total and store the reservation with its lease. All counters or none."""
        ...

    async def settle(self, reservation_id: str, amounts: tuple[int, ...], row: LedgerRow) -> bool:
        """In one transaction: release the reservation's reserved amounts, add ``amounts``
        (aligned with the plan's counters) to spent, and insert the ledger row. Idempotent:
        returns False, and changes nothing, if the reservation is already settled or lapsed."""
        ...

    async def release(self, reservation_id: str) -> bool:
        """Drop a reservation whose request never reached an upstream: nothing is charged
        and no ledger row is written. False if it is already settled or lapsed."""
        ...

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        """Delete counter rows that no window can count any more: for each budget, rows
        older than ``keep_from_ms[budget]`` with nothing reserved. The ledger keeps the
        history; this only stops the live counters from growing with time."""
        ...

    async def renew_leases(self, owner: str, expires_at: datetime) -> int:
        """Extend every lease held by ``owner``; returns how many."""
        ...

    async def expire_leases(self, now: datetime) -> int:
        """Settle every reservation whose lease expired before ``now`` at its reserved amount,
        writing its `spendgate.domain.settlement.lapsed_row`; returns how many."""
        ...

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        """Current spent/reserved and effective limit of each counter (window sums)."""
        ...

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        """Members of a budget with a counter at or after ``since_ms`` (for listings)."""
        ...

    async def set_override(self, override: BudgetOverride) -> None:
        """A runtime limit for a budget, replacing the configured one until it expires."""
        ...

    async def clear_overrides(self, budget: str) -> int: ...

    async def overrides(self, now: datetime) -> list[BudgetOverride]:
        """Overrides in force at ``now`` (latest per budget)."""
        ...

    async def reset_budget(self, budget: str, member: str | None, since_ms: int) -> int:
        """Zero the spent amount of a budget's counters from ``since_ms`` (current window),
        for one member or all; reserved amounts (requests in flight) stay. The ledger keeps
        every row: a reset forgives spend, it does not erase history."""
        ...
