"""Budgets on SQLite: counters, reservation leases and limit overrides (`SqliteBudgets`).

Every write is a job on the one writer thread of `spendgate.storage.sqlite`, and each
job runs in its own savepoint inside the writer's ``BEGIN IMMEDIATE`` transaction. The
write lock is held from before the first read of a reservation to its COMMIT, so the
read-decide-write of `reserve` is atomic against the other tasks of this process (the
writer runs jobs one at a time, each seeing the effects of those before it) *and*
against every other process on the same file (``BEGIN IMMEDIATE`` also starts the read
snapshot on the latest commit). Nothing is cached: limits, overrides and counters are
read inside the transaction that decides. A job that fails rolls back only itself; the
caller hears about the decision only once it has committed.

Counters are rows of (budget, member, unit, bucket_ms); a window is the sum of its
budget and member's rows with ``bucket_ms >= window.since_ms`` (`spendgate.domain.periods`).
A reservation adds its amount to ``reserved`` on the row of the bucket it was made in,
and settlement (or lapse) takes exactly that amount off the same row again, so ``reserved``
is always the sum of the live reservations: it cannot leak.

Measured (one caller at a time, three counters, `time.perf_counter_ns` around the awaited
call, CPython 3.11, SQLite 3.40, 2 vCPU shared with other work): `reserve` p50 ~130 us,
`settle` p50 ~130 us, each one writer round trip (~26 us of it is the hop to the writer
and back; the transaction itself is ~60-70 us, mostly the WAL append at COMMIT). `settle`
replaces `record` on budgeted requests, which costs ~65-80 us alone. See
``test_reserve_and_settle_latency`` in ``tests/storage/test_budget_store.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, TypeVar

import orjson

from spendgate.clock import Clock, from_ms, to_ms
from spendgate.domain.admission import Admitted, CounterState, Refused, WorstCase, decide
from spendgate.domain.budgets import CounterRef
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.settlement import lapse_charge, lapsed_row
from spendgate.domain.totals import BlockGroup
from spendgate.errors import StorageError
from spendgate.storage.base import BudgetOverride, ReservationPlan

log = logging.getLogger(__name__)

T = TypeVar("T")

EXPIRE_BATCH = 256  # lapsed reservations settled per transaction

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

# ---------------------------------------------------------------------------- statements

# One row: the window's sums and the budget's override in force (NULL: none).
_BLOCKED = (
    "SELECT blocked_by, COUNT(*), SUM(would_cost_nanos) FROM ledger "
    "WHERE ts >= ? AND ts < ? AND blocked_by IS NOT NULL GROUP BY blocked_by"
)
_SHADOW_HITS = (
    "SELECT hit.value, COUNT(*), SUM(ledger.cost_nanos) FROM ledger, "
    "json_each(ledger.shadow_blocks) AS hit "
    "WHERE ledger.ts >= ? AND ledger.ts < ? AND ledger.shadow_blocks != '[]' GROUP BY hit.value"
)
_PRUNE_COUNTERS = "DELETE FROM budget_counters WHERE budget = ? AND bucket_ms < ? AND reserved = 0"
_COUNTER_STATE = """
SELECT COALESCE(SUM(spent), 0), COALESCE(SUM(reserved), 0), (
    SELECT limit_amount FROM budget_overrides
    WHERE budget = ?1 AND (expires_ms IS NULL OR expires_ms > ?5)
    ORDER BY created_ms DESC, id DESC LIMIT 1
), MIN(CASE WHEN spent > 0 OR reserved > 0 THEN bucket_ms END)
FROM budget_counters
WHERE budget = ?1 AND member = ?2 AND unit = ?3 AND bucket_ms >= ?4
"""
_ADD_RESERVED = """
INSERT INTO budget_counters (budget, member, unit, bucket_ms, spent, reserved)
VALUES (?, ?, ?, ?, 0, ?)
ON CONFLICT (budget, member, unit, bucket_ms) DO UPDATE SET reserved = reserved + excluded.reserved
"""
# Release ``?6`` reserved and charge ``?5`` spent on one row (created if it went missing).
_SETTLE_COUNTER = """
INSERT INTO budget_counters (budget, member, unit, bucket_ms, spent, reserved)
VALUES (?1, ?2, ?3, ?4, ?5, 0)
ON CONFLICT (budget, member, unit, bucket_ms) DO UPDATE
SET spent = spent + excluded.spent, reserved = reserved - ?6
"""
_INSERT_RESERVATION = """
INSERT INTO reservations (id, owner, expires_ms, created_ms, counters, ceiling, worst, template)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_RESERVATION_COUNTERS = "SELECT counters FROM reservations WHERE id = ?"
_DELETE_RESERVATION = "DELETE FROM reservations WHERE id = ?"
_LAPSED = """
SELECT id, counters, ceiling, worst, template FROM reservations
WHERE expires_ms < ? ORDER BY expires_ms, id LIMIT ?
"""
_RENEW = "UPDATE reservations SET expires_ms = MAX(expires_ms, ?) WHERE owner = ?"
_ACTIVE_MEMBERS = """
SELECT DISTINCT member FROM budget_counters WHERE budget = ? AND bucket_ms >= ? ORDER BY member
"""
_INSERT_OVERRIDE = """
INSERT INTO budget_overrides (budget, limit_amount, expires_ms, created_ms) VALUES (?, ?, ?, ?)
"""
# Housekeeping before a new override: drop the expired ones, and every older one when the
# new one never expires (the latest override in force wins, so they can never apply again).
_PRUNE_OVERRIDES = """
DELETE FROM budget_overrides
WHERE budget = ?1 AND (?2 OR (expires_ms IS NOT NULL AND expires_ms <= ?3))
"""
_CLEAR_OVERRIDES = "DELETE FROM budget_overrides WHERE budget = ?"
_OVERRIDES = """
SELECT budget, limit_amount, expires_ms, created_ms FROM budget_overrides AS o
WHERE id = (
    SELECT id FROM budget_overrides AS i
    WHERE i.budget = o.budget AND (i.expires_ms IS NULL OR i.expires_ms > ?1)
    ORDER BY created_ms DESC, id DESC LIMIT 1
)
ORDER BY budget
"""
_RESET_ALL = "UPDATE budget_counters SET spent = 0 WHERE budget = ? AND bucket_ms >= ?"
_RESET_MEMBER = (
    "UPDATE budget_counters SET spent = 0 WHERE budget = ? AND member = ? AND bucket_ms >= ?"
)

# ---------------------------------------------------------------------------- conversions

# A stored counter: [budget, member, bucket_ms, unit, amount reserved]
StoredCounter = tuple[str, str, int, str, int]

_WORST_FIELDS = tuple(f.name for f in dataclasses.fields(WorstCase))
_ROW_FIELDS = tuple(f.name for f in dataclasses.fields(LedgerRow))


def _dumps(value: object) -> str:
    return orjson.dumps(value).decode()


def dump_worst(worst: WorstCase) -> str:
    return _dumps({name: getattr(worst, name) for name in _WORST_FIELDS})


def load_worst(text: str) -> WorstCase:
    values: dict[str, Any] = orjson.loads(text)
    return WorstCase(**{name: values[name] for name in _WORST_FIELDS})


def dump_template(row: LedgerRow) -> str:
    """By field name, so that a row stored before an upgrade still loads after it."""
    values = {name: getattr(row, name) for name in _ROW_FIELDS}
    values["ts"] = to_ms(row.ts)
    values["tags"] = list(row.tags)
    values["shadow_blocks"] = list(row.shadow_blocks)
    return _dumps(values)


def load_template(text: str) -> LedgerRow:
    stored: dict[str, Any] = orjson.loads(text)
    values = {name: stored[name] for name in _ROW_FIELDS if name in stored}
    values["ts"] = from_ms(values["ts"])
    values["tags"] = tuple(values["tags"])
    values["shadow_blocks"] = tuple(values.get("shadow_blocks", ()))
    return LedgerRow(**values)


def _load_counters(text: str) -> list[StoredCounter]:
    counters: list[StoredCounter] = [tuple(item) for item in orjson.loads(text)]
    return counters


# ---------------------------------------------------------------------------- work
# Each function below runs on the writer thread, inside a savepoint of the writer's
# transaction (or, for reads, in a read transaction of the event-loop reader).


def read_state(conn: sqlite3.Connection, ref: CounterRef, now_ms: int) -> CounterState:
    budget = ref.budget
    params = (budget.name, ref.member, budget.unit.value, ref.window.since_ms, now_ms)
    spent, reserved, override, oldest = conn.execute(_COUNTER_STATE, params).fetchone()
    limit = budget.limit if override is None else override
    return CounterState(ref=ref, limit=limit, spent=spent, reserved=reserved, oldest_ms=oldest)


def reserve_work(
    plan: ReservationPlan, now_ms: int, conn: sqlite3.Connection
) -> Admitted | Refused:
    states = [read_state(conn, ref, now_ms) for ref in plan.counters]
    decision = decide(plan.worst, states, plan.caps, plan.min_output)
    if isinstance(decision, Refused):
        return decision
    stored: list[StoredCounter] = []
    for ref, amount in zip(plan.counters, decision.amounts, strict=True):
        counter = (ref.budget.name, ref.member, ref.window.bucket_ms, ref.budget.unit.value, amount)
        conn.execute(_ADD_RESERVED, (counter[0], counter[1], counter[3], counter[2], amount))
        stored.append(counter)
    conn.execute(
        _INSERT_RESERVATION,
        (
            plan.reservation_id,
            plan.owner,
            to_ms(plan.expires_at),
            now_ms,
            _dumps(stored),
            decision.ceiling,
            dump_worst(plan.worst),
            dump_template(plan.template),
        ),
    )
    return decision


def _charge(conn: sqlite3.Connection, counter: Sequence[Any], actual: int) -> None:
    budget, member, bucket_ms, unit, reserved = counter
    conn.execute(_SETTLE_COUNTER, (budget, member, unit, bucket_ms, actual, reserved))


InsertRow = Callable[[sqlite3.Connection, LedgerRow], None]


def settle_work(
    reservation_id: str,
    amounts: tuple[int, ...],
    row: LedgerRow,
    insert_row: InsertRow,
    conn: sqlite3.Connection,
) -> bool:
    found = conn.execute(_RESERVATION_COUNTERS, (reservation_id,)).fetchone()
    if found is None:
        return False
    counters = _load_counters(found[0])
    if len(counters) != len(amounts):
        raise StorageError(
            f"reservation {reservation_id!r} holds {len(counters)} counters, "
            f"settled with {len(amounts)} amounts"
        )
    for counter, actual in zip(counters, amounts, strict=True):
        if actual > counter[4]:
            log.warning(
                "reservation %s settled above its reservation on %s: %d > %d",
                reservation_id,
                counter[0],
                actual,
                counter[4],
            )
        _charge(conn, counter, actual)
    conn.execute(_DELETE_RESERVATION, (reservation_id,))
    insert_row(conn, row)
    return True


def release_work(reservation_id: str, conn: sqlite3.Connection) -> bool:
    """Drop a reservation whose request never went anywhere: no charge, no ledger row."""
    found = conn.execute(_RESERVATION_COUNTERS, (reservation_id,)).fetchone()
    if found is None:
        return False
    for counter in _load_counters(found[0]):
        _charge(conn, counter, 0)
    conn.execute(_DELETE_RESERVATION, (reservation_id,))
    return True


def expire_work(now_ms: int, insert_row: InsertRow, conn: sqlite3.Connection) -> int:
    lapsed = conn.execute(_LAPSED, (now_ms, EXPIRE_BATCH)).fetchall()
    for reservation_id, counters, ceiling, worst, template in lapsed:
        for counter in _load_counters(counters):
            _charge(conn, counter, lapse_charge(counter[3], counter[4]))
        row = lapsed_row(load_template(template), load_worst(worst), ceiling)
        try:
            insert_row(conn, row)
        except sqlite3.IntegrityError:  # the statement alone is undone; keep the charge
            log.warning(
                "lapsed reservation %s already has a ledger row; charged it without a second",
                reservation_id,
            )
        conn.execute(_DELETE_RESERVATION, (reservation_id,))
    return len(lapsed)


def set_override_work(override: BudgetOverride, conn: sqlite3.Connection) -> None:
    created_ms = to_ms(override.created_at)
    expires_ms = None if override.expires_at is None else to_ms(override.expires_at)
    conn.execute(_PRUNE_OVERRIDES, (override.budget, expires_ms is None, created_ms))
    conn.execute(_INSERT_OVERRIDE, (override.budget, override.limit, expires_ms, created_ms))


def _rowcount(sql: str, params: Sequence[Any], conn: sqlite3.Connection) -> int:
    return conn.execute(sql, params).rowcount


def _read_states(
    refs: tuple[CounterRef, ...], now_ms: int, conn: sqlite3.Connection
) -> list[CounterState]:
    conn.execute("BEGIN")  # one snapshot for every counter
    try:
        return [read_state(conn, ref, now_ms) for ref in refs]
    finally:
        conn.execute("COMMIT")


def _check_plan(plan: ReservationPlan) -> None:
    ids = [ref.id for ref in plan.counters]
    if len(set(ids)) != len(ids):
        raise ValueError(f"reservation {plan.reservation_id!r} names a counter twice: {ids}")
    if plan.expires_at.tzinfo is None:
        raise ValueError("ReservationPlan.expires_at must be timezone-aware")


# ---------------------------------------------------------------------------- mixin


class SqliteBudgets(ABC):
    """The budget methods of `spendgate.storage.sqlite.SqliteStorage`.

    The storage class supplies the connections through the four abstract hooks below.
    """

    _clock: Clock

    @abstractmethod
    def _submit(self, work: Callable[[sqlite3.Connection], T], what: str) -> asyncio.Future[T]:
        """Queue a job on the writer; resolves with its result after COMMIT."""

    @abstractmethod
    def _reader(self) -> sqlite3.Connection:
        """The read-only connection of the event-loop thread."""

    @abstractmethod
    def _report(self, work: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """Run a long read on the report thread."""

    @abstractmethod
    def _insert_row(self, conn: sqlite3.Connection, row: LedgerRow) -> None:
        """Insert a ledger row on ``conn`` (the writer's, inside a job)."""

    def _on_reader(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self._reader())
        except sqlite3.Error as exc:
            raise StorageError(f"SQLite budget read failed: {exc}") from exc

    # -- the request path ------------------------------------------------------------------

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        """Decide and reserve in one writer job (see the module docstring).

        If the caller is cancelled while waiting, the job still runs; an admitted
        reservation is then released at once (no charge, no ledger row), so an abandoned
        request never holds budget until its lease lapses.
        """
        _check_plan(plan)
        now_ms = to_ms(self._clock.now())
        work = partial(reserve_work, plan, now_ms)
        future = self._submit(work, f"reservation {plan.reservation_id!r}")
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(partial(self._release_abandoned, plan.reservation_id))
            raise

    def _release_abandoned(
        self, reservation_id: str, future: asyncio.Future[Admitted | Refused]
    ) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        if isinstance(future.result(), Refused):
            return
        try:
            release = self._submit(
                partial(release_work, reservation_id), f"release of {reservation_id!r}"
            )
        except StorageError:
            log.warning("storage closed; reservation %s will lapse", reservation_id)
            return
        release.add_done_callback(_log_failure)

    async def settle(self, reservation_id: str, amounts: tuple[int, ...], row: LedgerRow) -> bool:
        """Charge, release and write the row in one job; False (nothing written) if the
        reservation is already settled or lapsed. A caller cancelled while waiting does
        not take the settlement back."""
        if any(amount < 0 for amount in amounts):
            raise ValueError(f"negative settlement amounts for {reservation_id!r}: {amounts}")
        work = partial(settle_work, reservation_id, tuple(amounts), row, self._insert_row)
        return await self._submit(work, f"settlement of {reservation_id!r}")

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        params = (to_ms(since), to_ms(until))

        def scan(conn: sqlite3.Connection) -> list[BlockGroup]:
            found: dict[str, list[int]] = {}
            for name, count, cost in conn.execute(_BLOCKED, params):
                found.setdefault(name, [0, 0, 0, 0])[0:2] = [count, cost]
            for name, count, cost in conn.execute(_SHADOW_HITS, params):
                found.setdefault(name, [0, 0, 0, 0])[2:4] = [count, cost]
            return [BlockGroup(name, *values) for name, values in sorted(found.items())]

        return await self._report(scan)

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        def prune(conn: sqlite3.Connection) -> int:
            return sum(
                conn.execute(_PRUNE_COUNTERS, (budget, since_ms)).rowcount
                for budget, since_ms in keep_from_ms.items()
            )

        return await self._submit(prune, "counter pruning")

    async def release(self, reservation_id: str) -> bool:
        """Drop a reservation whose request never reached an upstream: no charge, no row."""
        work = partial(release_work, reservation_id)
        return await self._submit(work, f"release of {reservation_id!r}")

    # -- leases ------------------------------------------------------------------------------

    async def renew_leases(self, owner: str, expires_at: datetime) -> int:
        work = partial(_rowcount, _RENEW, (to_ms(expires_at), owner))
        return await self._submit(work, f"lease renewal for {owner!r}")

    async def expire_leases(self, now: datetime) -> int:
        now_ms = to_ms(now)
        total = 0
        while True:
            done = await self._submit(partial(expire_work, now_ms, self._insert_row), "lapse")
            total += done
            if done < EXPIRE_BATCH:
                return total

    # -- reads -------------------------------------------------------------------------------

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        """One read snapshot on the event-loop reader (a few indexed lookups, no hop)."""
        return self._on_reader(partial(_read_states, tuple(refs), to_ms(now)))

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        def scan(conn: sqlite3.Connection) -> list[str]:
            return [row[0] for row in conn.execute(_ACTIVE_MEMBERS, (budget, since_ms))]

        return await self._report(scan)

    async def overrides(self, now: datetime) -> list[BudgetOverride]:
        rows = self._on_reader(lambda conn: conn.execute(_OVERRIDES, (to_ms(now),)).fetchall())
        return [
            BudgetOverride(
                budget=budget,
                limit=limit,
                expires_at=None if expires_ms is None else from_ms(expires_ms),
                created_at=from_ms(created_ms),
            )
            for budget, limit, expires_ms, created_ms in rows
        ]

    # -- operator changes --------------------------------------------------------------------

    async def set_override(self, override: BudgetOverride) -> None:
        work = partial(set_override_work, override)
        await self._submit(work, f"override of budget {override.budget!r}")

    async def clear_overrides(self, budget: str) -> int:
        work = partial(_rowcount, _CLEAR_OVERRIDES, (budget,))
        return await self._submit(work, f"overrides of budget {budget!r}")

    async def reset_budget(self, budget: str, member: str | None, since_ms: int) -> int:
        if member is None:
            work = partial(_rowcount, _RESET_ALL, (budget, since_ms))
        else:
            work = partial(_rowcount, _RESET_MEMBER, (budget, member, since_ms))
        return await self._submit(work, f"reset of budget {budget!r}")


def _log_failure(future: asyncio.Future[Any]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("releasing an abandoned reservation failed: %s", future.exception())
