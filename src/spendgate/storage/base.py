"""The storage roles every backend implements: keys, the ledger, live counters.

Three small protocols rather than one: a Redis counter store, a PostgreSQL ledger or an
in-memory store implements only its role, and `spendgate.storage.stores.Storage` binds
one of each (chosen by URL) and holds the operations that span two roles.

* `KeyStore`: virtual keys, looked up by hash on every request.
* `Ledger`: one row per request, appended in batches and **idempotent by request id**
  (`Ledger.append` leaves a row that exists as it is and says so), and the report queries.
* `CounterStore`: budget and limit counters, reservations with their leases, overrides,
  and the blocks of detected loops; **idempotent by reservation id** (a reservation
  settles, is released or lapses once).

Settlement is two halves, the ledger row first and the counters second (see `Storage`):
counters and ledger may live in different systems, and a crash between the halves is
repaired by the lease sweeper, which charges the counters what the row in force says.
A backend that holds both roles in one database (SQLite, memory) commits both halves in
one transaction instead (`JointSettlement`).

Durability contract of a write: when the awaitable returns, the write survives a crash of
the gateway process (``kill -9``). It need not survive a power loss or kernel crash unless
the backend says so (SQLite: ``synchronous=NORMAL`` in WAL mode, so commits reach the OS
but are not fsynced one by one).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol, TypeVar, runtime_checkable

from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase
from spendgate.domain.breaker import BreakerDecision, BreakerState
from spendgate.domain.budgets import CounterRef, RequestCap
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.loops import LoopBlock, LoopPolicy
from spendgate.domain.marks import Overruns
from spendgate.domain.refusals import CallerModel, RefusalCombo, RefusalGroup
from spendgate.domain.savings import SavingsBy, SavingsGroup, ShadowSavings
from spendgate.domain.totals import BlockGroup, Bucket, GroupBy, UsageGroup, UsagePoint, UsageQuery

__all__ = [
    "BudgetOverride",
    "CounterStore",
    "GroupBy",
    "JointSettlement",
    "KeyStore",
    "Lapsed",
    "Ledger",
    "ReservationPlan",
    "RowKeeper",
    "StoredCounter",
    "UsageGroup",
    "UsageQuery",
]

R = TypeVar("R")

EXPIRE_BATCH = 256  # lapsed reservations settled per step


@dataclass(frozen=True, slots=True)
class ReservationPlan:
    """Everything `CounterStore.reserve` needs to decide and record one reservation atomically."""

    reservation_id: str  # the request id
    owner: str  # the gateway process that holds the lease
    expires_at: datetime  # lease expiry; renewed while the request runs
    counters: tuple[CounterRef, ...]
    worst: WorstCase
    caps: tuple[RequestCap, ...]
    min_output: int
    template: LedgerRow  # identity fields for the row written if the lease lapses (opaque
    # to a counter store: it keeps it, serialized, and gives it back with the lapse)


@dataclass(frozen=True, slots=True)
class BudgetOverride:
    budget: str
    limit: int  # in the budget's unit
    expires_at: datetime | None  # None: until changed again
    created_at: datetime


# What a live reservation holds on one counter: (budget, member, bucket_ms, unit, amount).
StoredCounter = tuple[str, str, int, str, int]


@dataclass(frozen=True, slots=True)
class Lapsed:
    """A reservation whose lease expired: its gateway died (or stalled) before settling."""

    reservation_id: str
    counters: tuple[StoredCounter, ...]
    ceiling: int
    worst: WorstCase
    template: LedgerRow


@dataclass(frozen=True, slots=True)
class RetiredKey:
    """A secret's hash that a rotation replaced: whose it was, and when."""

    key_id: str
    retired_at: datetime


class KeyStore(Protocol):
    async def insert_key(self, key: ApiKey) -> None: ...

    async def update_key(self, key: ApiKey) -> None:
        """Replace the stored key with the same id (revoke, rotate, update); StorageError
        if none. A hash it replaces (a rotation) is kept as retired (`retired_key`)."""
        ...

    async def key_by_hash(self, key_hash: str) -> ApiKey | None: ...

    async def retired_key(self, key_hash: str) -> RetiredKey | None:
        """Whose secret this hash was before a rotation replaced it; None if no key's."""
        ...

    async def key_by_id(self, key_id: str) -> ApiKey | None: ...

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]: ...

    async def check(self) -> None:
        """Raise StorageError unless the store can serve requests now."""
        ...


class Ledger(Protocol):
    async def record(self, row: LedgerRow) -> None:
        """Append one row; returns once it would survive ``kill -9``. A second row with a
        known request id is a double charge: refused with StorageError, never merged."""
        ...

    async def append(self, rows: Sequence[LedgerRow]) -> list[bool]:
        """Append rows idempotently, in one batch: for each, True if it was added, False
        if a row with its request id was already there (that row stays as it was)."""
        ...

    async def row(self, request_id: str) -> LedgerRow | None:
        """The row of one request, if the ledger has it."""
        ...

    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        """Totals per group over ``[since, until)``, highest cost first."""
        ...

    async def usage_series(
        self, since: datetime, until: datetime, bucket: Bucket, group_by: GroupBy
    ) -> list[UsagePoint]:
        """Usage per UTC hour or day and per group over ``[since, until)``, oldest bucket
        first, then highest cost, as `spendgate.domain.totals.usage_series` folds it."""
        ...

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        """Per budget, limit or breaker over ``[since, until)``: the requests it refused and
        their worst-case cost (how many of them were told to retry), the requests it would
        have refused (shadow limits), and the requests charged more on it than they had
        reserved (overruns)."""
        ...

    async def marked(self, since: datetime, until: datetime) -> list[LedgerRow]:
        """The rows over ``[since, until)`` that were refused or settled above their
        reservation, oldest first."""
        ...

    async def recent_outputs(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, list[int]]:
        """Output sizes for estimating refused requests: for each (key, model) of ``pairs``,
        and each of their models over all keys (key None), the output tokens of the last
        ``limit`` answered requests (status < 400, not refused) over ``[since, until)``,
        newest first (ties by request id), as `spendgate.domain.refusals.output_samples`."""
        ...

    async def output_medians(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, int]:
        """The lower median of each non-empty list `recent_outputs` gives for the same
        arguments (`spendgate.domain.refusals.medians`), computed where the rows are."""
        ...

    async def refusals(self, since: datetime, until: datetime) -> list[RefusalCombo]:
        """The distinct refused requests over ``[since, until)`` (repeats chained within
        the period only) summed per combination, sorted, none of zero requests: as
        `spendgate.domain.refusals.refusal_combos` folds the period's rows."""
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
        """Rows over ``[since, until)``, oldest first (ties in insertion order)."""
        ...

    async def latest_of_key(self, key_id: str, limit: int) -> list[LedgerRow]:
        """The last ``limit`` rows of one key (refusals included), newest first."""
        ...

    async def check(self) -> None: ...


@runtime_checkable
class MarksReader(Protocol):
    """A ledger that reads a budgets view's marked rows without the rest of the window's
    (PostgreSQL: from a rollup of the newest refusal per name and caller; SQLite: narrowed
    in SQL from the window's marked rows), and counts its overruns without loading them
    (SQLite: from rollups, migration 0018; PostgreSQL: counted in SQL). Others give
    `Ledger.marked` narrowed by `spendgate.domain.marks.view_marks` and counted by
    `spendgate.domain.marks.overruns`."""

    async def view_marks(
        self, since: datetime, recent: datetime, until: datetime
    ) -> list[LedgerRow]:
        """`spendgate.domain.marks.view_marks` of ``marked(since, until)``, rows newer
        than ``until`` (now) left out as there (PostgreSQL: a caller's newest refusal before
        ``until`` looked up where its rollup holds a newer one)."""
        ...

    async def overruns(self, since: datetime, until: datetime) -> Overruns:
        """`spendgate.domain.marks.overruns` of ``marked(since, until)``."""
        ...


@runtime_checkable
class RefusalEstimates(Protocol):
    """A ledger that sums `spendgate blocks`' distinct requests and estimate itself
    (optional: `Storage.refusal_estimates` folds `Ledger.refusals` and
    `Ledger.output_medians` with `spendgate.domain.refusals.estimate_groups` otherwise)."""

    async def refusal_estimates(self, since: datetime, until: datetime) -> dict[str, RefusalGroup]:
        """Per name, over ``[since, until)``: what `estimate_groups` gives from
        `Ledger.refusals` and the `Ledger.output_medians` of their pairs over the
        `SAMPLE_SPAN` before ``until`` (`RECENT_OUTPUTS` each)."""
        ...


@runtime_checkable
class RowKeeper(Protocol):
    """A counter store in another system than the ledger that can charge a reservation
    before its ledger row is written, keeping the row until the ledger has it (Redis):
    the counters are settled before the client's answer, the ledger's commit after it.

    `charge` settles as `CounterStore.settle` does and, in the same atomic step, keeps
    ``row``; `forget` drops it once the ledger has it (`forget_soon`: in passing, with a
    later call); `unwritten` lists the rows kept longer than their ``due`` (their gateway
    died, or the ledger was down), for any gateway's sweeper to write (idempotent by
    request id) and forget. So a row charged
    this way is in the ledger once, whatever dies when."""

    async def charge(
        self, reservation_id: str, amounts: Sequence[int], row: LedgerRow, due: timedelta
    ) -> bool: ...

    async def unwritten(self, now: datetime, limit: int) -> list[LedgerRow]: ...

    async def forget(self, reservation_ids: Sequence[str]) -> None: ...

    def forget_soon(self, reservation_ids: Sequence[str]) -> None:
        """`forget`, later: with the store's next round trip that can carry it, at the
        latest on its next `CounterStore.renew_leases` or on close."""
        ...

    async def correct(self, held: Sequence[StoredCounter], deltas: Sequence[int]) -> None:
        """Add ``deltas`` to the spent amounts of ``held``'s counters in their buckets."""
        ...


class CounterStore(Protocol):
    # The largest limit (a budget's, an override's, a key's own budget or rate, in the
    # budget's unit) its counters keep exactly: checked where an operator sets one.
    max_limit: int

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        """Atomically: read every counter (with its effective limit), run
        `spendgate.domain.admission.decide`, and if admitted add each amount to the
        counter's reserved total and store the reservation with its lease. All or none."""
        ...

    async def holding(self, reservation_id: str) -> tuple[StoredCounter, ...] | None:
        """What a live reservation holds; None once it is settled, released or lapsed."""
        ...

    async def settle(self, reservation_id: str, amounts: Sequence[int]) -> bool:
        """Release the reservation and add ``amounts`` (aligned with its counters) to spent.
        False, changing nothing, if it is already settled, released or lapsed."""
        ...

    async def release(self, reservation_id: str) -> bool:
        """Drop a reservation whose request never reached an upstream: nothing charged."""
        ...

    async def renew_leases(
        self, owner: str, expires_at: datetime, keep_lapsing: frozenset[str] = frozenset()
    ) -> int:
        """Extend every lease held by ``owner`` (never shortening one) but those named in
        ``keep_lapsing`` (requests whose rows could not be written: `spendgate.storage.spool`);
        returns how many."""
        ...

    async def lapsed(self, now: datetime, limit: int) -> list[Lapsed]:
        """Up to ``limit`` reservations whose lease expired before ``now``, oldest first.
        They stay until settled: whoever settles one first wins."""
        ...

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        """Current spent/reserved and effective limit of each counter (window sums)."""
        ...

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        """Members of a budget with a counter at or after ``since_ms`` (for listings)."""
        ...

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        """Delete counter rows that no window can count any more: for each budget, rows
        older than ``keep_from_ms[budget]`` with nothing reserved."""
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
        for one member or all; reserved amounts (requests in flight) stay."""
        ...

    async def loop_block(self, key_id: str, fingerprint: str) -> LoopBlock | None:
        """The block of one (key, fingerprint): in force or ended, until it is pruned."""
        ...

    async def strike_loop(
        self, policy: LoopPolicy, *, key_id: str, fingerprint: str, model: str, now: datetime
    ) -> LoopBlock:
        """Atomically (against every process on the store): read the pair's block,
        `LoopPolicy.strike` it at ``now`` and store what that returns."""
        ...

    async def loop_blocks(self) -> list[LoopBlock]:
        """Every stored block (in force or ended), the latest detection first."""
        ...

    async def release_loop(self, block_id: str) -> LoopBlock | None:
        """Delete a block and its strikes (an operator's release); None if there is none."""
        ...

    async def prune_loops(self, ended_before: datetime) -> int:
        """Delete blocks that ended before ``ended_before`` (their strikes are forgotten)."""
        ...

    async def update_breaker(self, key_id: str, model: str, decide: BreakerDecision[R]) -> R:
        """Atomically (against every process on the store): read the circuit breaker of
        (key, model), store the state ``decide`` returns for it (None: delete it), and
        return what ``decide`` says."""
        ...

    async def breakers(self) -> list[BreakerState]:
        """Every stored circuit breaker (failing, open or half-open)."""
        ...

    async def prune_breakers(self, failed_before_ms: int) -> int:
        """Delete the breakers whose last failure was before ``failed_before_ms``."""
        ...

    async def check(self) -> None: ...


class JointSettlement(Protocol):
    """Both settlement halves in one transaction, for a backend that holds the ledger and
    the counters together. Same results as the two halves (`Storage.settle`)."""

    async def settle(self, reservation_id: str, amounts: Sequence[int], row: LedgerRow) -> bool: ...

    async def sweep(self, now: datetime) -> list[LedgerRow]:
        """Settle lapsed reservations (at most `EXPIRE_BATCH` per transaction, until none
        is left): the row in force of each, written as a lapsed row if it had none."""
        ...


class Lifecycle(Protocol):
    async def open(self) -> None: ...

    async def close(self) -> None: ...
