"""The counter store on PostgreSQL (`PgCounters`): budgets, limits, reservations and their
leases, overrides, loop blocks. Every gateway on the database shares them, so every
decision runs in one transaction under the advisory locks of its counters (see
`counters_sql` for the lock order): two gateways never overshoot a budget between them.

`reserve` is five round trips on one pooled connection: BEGIN, the counters' advisory
locks, one statement reading every counter, one adding the reservation to them and one
storing it, COMMIT (the decision itself, `spendgate.domain.admission.decide`, runs here,
between the read and the writes, with the locks held).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import TypeVar

import asyncpg

from spendgate.clock import from_ms, to_ms
from spendgate.domain.admission import Admitted, CounterState, Refused, decide
from spendgate.domain.breaker import BreakerDecision, BreakerState
from spendgate.domain.budgets import MAX_LIMIT, CounterRef
from spendgate.domain.loops import LoopBlock, LoopPolicy, loop_id
from spendgate.errors import StorageError
from spendgate.storage.base import BudgetOverride, Lapsed, ReservationPlan, StoredCounter
from spendgate.storage.codec import (
    dump_template,
    dump_worst,
    dumps,
    load_counters,
    load_template,
    load_worst,
)
from spendgate.storage.plans import check_amounts, check_plan, stored_counters
from spendgate.storage.postgres import breakers_sql
from spendgate.storage.postgres import counters_sql as work
from spendgate.storage.postgres import loops_sql as loops
from spendgate.storage.postgres.database import Conn, PgDatabase

R = TypeVar("R")

log = logging.getLogger("spendgate.storage.postgres")


def lapsed_of(row: asyncpg.Record) -> Lapsed:
    reservation_id, counters, ceiling, worst, template = row
    return Lapsed(
        reservation_id,
        load_counters(counters),
        ceiling,
        load_worst(worst),
        load_template(template),
    )


async def take(
    conn: Conn, reservation_id: str, amounts: Sequence[int] | None
) -> tuple[StoredCounter, ...] | None:
    """End a live reservation inside the caller's transaction: delete it, lock its
    counters, charge ``amounts`` (None: nothing, a release). None if it is gone."""
    found = await conn.fetchval(work.TAKE, reservation_id)
    if found is None:
        return None
    counters = load_counters(found)
    if amounts is not None:
        check_amounts(reservation_id, counters, amounts)
    await work.lock_counters(conn, counters)
    await work.charge(conn, counters, [0] * len(counters) if amounts is None else amounts)
    return counters


class PgCounters:
    max_limit = MAX_LIMIT  # a 64-bit integer column

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        # Reservations whose transaction failed with the connection: their COMMIT may have
        # taken effect although the caller was refused. Released (idempotently) at the next
        # lease renewal that reaches the server, before their lease is renewed.
        self._doubtful: set[str] = set()

    # -- the request path --------------------------------------------------------------

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        """Decide and reserve in one transaction. A caller cancelled while waiting does
        not leave an admitted reservation behind: it is released at once."""
        check_plan(plan)
        now_ms = to_ms(self._db.clock.now())
        job = partial(self._reserve, plan, now_ms)
        what = f"reservation {plan.reservation_id!r}"
        task = asyncio.ensure_future(self._db.transaction(job, what))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(partial(self._release_abandoned, plan.reservation_id))
            raise
        except StorageError:
            # Whatever failed, the caller is refused: if the COMMIT took effect after all
            # (a broken connection, a server shutting down), the reservation is released
            # at the next lease renewal rather than renewed for ever by this owner.
            self._doubtful.add(plan.reservation_id)
            raise

    async def _reserve(self, plan: ReservationPlan, now_ms: int, conn: Conn) -> Admitted | Refused:
        await work.lock_refs(conn, plan.counters)
        states = await work.read_states(conn, plan.counters, now_ms)
        decision = decide(plan.worst, states, plan.caps, plan.min_output)
        if isinstance(decision, Refused):
            return decision
        stored = stored_counters(plan, decision.amounts)
        if stored:
            await work.add_reserved(conn, stored)
        await conn.execute(
            work.INSERT_RESERVATION,
            plan.reservation_id,
            plan.owner,
            to_ms(plan.expires_at),
            now_ms,
            dumps(stored),
            decision.ceiling,
            dump_worst(plan.worst),
            dump_template(plan.template),
        )
        return decision

    def _release_abandoned(
        self, reservation_id: str, task: asyncio.Future[Admitted | Refused]
    ) -> None:
        if task.cancelled() or task.exception() is not None:
            # Its COMMIT may have taken effect (a connection broken as it went out) while
            # nobody was left to hear it: released at the next lease renewal, as above.
            self._doubtful.add(reservation_id)
            return
        if isinstance(task.result(), Refused):
            return
        release = asyncio.ensure_future(self.release(reservation_id))
        release.add_done_callback(_log_failure)

    async def holding(self, reservation_id: str) -> tuple[StoredCounter, ...] | None:
        found = await self._db.run(
            lambda conn: conn.fetchval(work.HOLDING, reservation_id), "a reservation"
        )
        return None if found is None else load_counters(found)

    async def settle(self, reservation_id: str, amounts: Sequence[int]) -> bool:
        """Charge and release in one transaction; False (nothing changed) if the
        reservation is already settled, released or lapsed."""
        charged = tuple(amounts)
        ended = await self._db.transaction(
            lambda conn: take(conn, reservation_id, charged), f"settlement of {reservation_id!r}"
        )
        return ended is not None

    async def release(self, reservation_id: str) -> bool:
        """Drop a reservation whose request never reached an upstream. One that cannot be
        released now (the server is unreachable) is released at the next lease renewal
        that reaches it, before its lease could lapse into a charge."""
        try:
            ended = await self._db.transaction(
                lambda conn: take(conn, reservation_id, None), f"release of {reservation_id!r}"
            )
        except StorageError:
            self._doubtful.add(reservation_id)  # released at the next renewal that works
            raise
        return ended is not None

    # -- leases ------------------------------------------------------------------------

    async def renew_leases(
        self, owner: str, expires_at: datetime, keep_lapsing: frozenset[str] = frozenset()
    ) -> int:
        for reservation_id in sorted(self._doubtful):  # first: their leases must not renew
            await self.release(reservation_id)  # raises (and keeps them) while unreachable
            self._doubtful.discard(reservation_id)
        params = (to_ms(expires_at), owner, sorted(keep_lapsing))
        status = await self._db.run(
            lambda conn: conn.execute(work.RENEW, *params), f"lease renewal for {owner!r}"
        )
        return _count(status)

    async def lapsed(self, now: datetime, limit: int) -> list[Lapsed]:
        rows = await self._db.run(
            lambda conn: conn.fetch(work.LAPSED, to_ms(now), limit), "lapsed reservations"
        )
        return [lapsed_of(row) for row in rows]

    # -- reads -------------------------------------------------------------------------

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        """One statement: one snapshot of every counter."""
        now_ms = to_ms(now)
        return await self._db.run(
            lambda conn: work.read_states(conn, refs, now_ms), "counter states"
        )

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        rows = await self._db.run(
            lambda conn: conn.fetch(work.ACTIVE_MEMBERS, budget, since_ms), "budget members"
        )
        return [row[0] for row in rows]

    async def overrides(self, now: datetime) -> list[BudgetOverride]:
        rows = await self._db.run(
            lambda conn: conn.fetch(work.OVERRIDES, to_ms(now)), "budget overrides"
        )
        return [
            BudgetOverride(
                budget=budget,
                limit=limit,
                expires_at=None if expires_ms is None else from_ms(expires_ms),
                created_at=from_ms(created_ms),
            )
            for budget, limit, expires_ms, created_ms in rows
        ]

    # -- housekeeping and operator changes ---------------------------------------------

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        if not keep_from_ms:
            return 0
        latest = max(keep_from_ms.values())

        async def prune(conn: Conn) -> int:
            # only budgets holding a counter older than the latest window start can have
            # one to prune: found in one query, not one statement per listed budget
            total = 0
            for (budget,) in await conn.fetch(work.PRUNABLE, latest):
                if budget in keep_from_ms:
                    since_ms = keep_from_ms[budget]
                    total += _count(await conn.execute(work.PRUNE_COUNTERS, budget, since_ms))
            return total

        return await self._db.transaction(prune, "counter pruning")

    async def set_override(self, override: BudgetOverride) -> None:
        created_ms = to_ms(override.created_at)
        expires_ms = None if override.expires_at is None else to_ms(override.expires_at)

        async def store(conn: Conn) -> None:
            await conn.execute(
                work.PRUNE_OVERRIDES, override.budget, expires_ms is None, created_ms
            )
            await conn.execute(
                work.INSERT_OVERRIDE, override.budget, override.limit, expires_ms, created_ms
            )

        await self._db.transaction(store, f"override of budget {override.budget!r}")

    async def clear_overrides(self, budget: str) -> int:
        status = await self._db.run(
            lambda conn: conn.execute(work.CLEAR_OVERRIDES, budget), f"overrides of {budget!r}"
        )
        return _count(status)

    async def reset_budget(self, budget: str, member: str | None, since_ms: int) -> int:
        sql, params = (
            (work.RESET_ALL, (budget, since_ms))
            if member is None
            else (work.RESET_MEMBER, (budget, member, since_ms))
        )
        status = await self._db.run(
            lambda conn: conn.execute(sql, *params), f"reset of budget {budget!r}"
        )
        return _count(status)

    # -- loop blocks -------------------------------------------------------------------

    async def loop_block(self, key_id: str, fingerprint: str) -> LoopBlock | None:
        block_id = loop_id(key_id, fingerprint)
        row = await self._db.run(lambda conn: conn.fetchrow(loops.ONE, block_id), "a loop block")
        return None if row is None else loops.block_of(row)

    async def strike_loop(
        self, policy: LoopPolicy, *, key_id: str, fingerprint: str, model: str, now: datetime
    ) -> LoopBlock:
        job = partial(loops.strike, policy, key_id, fingerprint, model, now)
        return await self._db.transaction(job, f"loop strike of key {key_id!r}")

    async def loop_blocks(self) -> list[LoopBlock]:
        rows = await self._db.run(lambda conn: conn.fetch(loops.ALL), "loop blocks")
        return [loops.block_of(row) for row in rows]

    async def release_loop(self, block_id: str) -> LoopBlock | None:
        row = await self._db.run(
            lambda conn: conn.fetchrow(loops.DELETE, block_id), f"release of loop {block_id!r}"
        )
        return None if row is None else loops.block_of(row)

    async def prune_loops(self, ended_before: datetime) -> int:
        status = await self._db.run(
            lambda conn: conn.execute(loops.PRUNE, to_ms(ended_before)), "loop block pruning"
        )
        return _count(status)

    # -- circuit breakers ---------------------------------------------------------------

    async def update_breaker(self, key_id: str, model: str, decide: BreakerDecision[R]) -> R:
        job = partial(breakers_sql.update, key_id, model, decide)
        return await self._db.transaction(job, f"circuit breaker of key {key_id!r}")

    async def breakers(self) -> list[BreakerState]:
        rows = await self._db.run(lambda conn: conn.fetch(breakers_sql.ALL), "circuit breakers")
        return [breakers_sql.state_of(row) for row in rows]

    async def prune_breakers(self, failed_before_ms: int) -> int:
        status = await self._db.run(
            lambda conn: conn.execute(breakers_sql.PRUNE, failed_before_ms),
            "circuit breaker pruning",
        )
        return _count(status)

    async def check(self) -> None:
        await self._db.check()


def _count(status: str) -> int:
    """Rows a command changed, from its status tag (``UPDATE 3``, ``DELETE 0``)."""
    return int(status.rsplit(" ", 1)[-1])


def _log_failure(future: asyncio.Future[bool]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("releasing an abandoned reservation failed: %s", future.exception())
