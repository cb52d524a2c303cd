"""`Storage`: one key store, one ledger and one counter store, bound together, with the
operations that span two of them.

Settlement in two halves (when the ledger and the counters are separate systems):

1. the reservation must still be live (`CounterStore.holding`), else nothing happens;
2. the ledger row is appended, idempotently by request id (`Ledger.append`);
3. the counters are charged and the reservation ends, idempotently by reservation id
   (`CounterStore.settle`) — with the amounts of the row *in force*: if a row for the
   request was already there (the sweeper wrote a lapsed row first, or an earlier try
   wrote this one), the counters are charged what that row says.

A crash between 2 and 3 leaves a row and a live reservation: its lease lapses and the
sweeper (`sweep`) finds the row, so the counters are charged what it says. A crash before 2
leaves only the reservation: the sweeper writes its lapsed row (the worst case, flagged
``unreconciled``) and charges that. Either way each request has one row and each
reservation settles once, and the counters equal what the ledger says.

Backends holding both roles in one database settle both halves in one transaction instead
(`JointSettlement`), with the same results.

The delegating methods below keep one handle for callers that need several roles; a new
backend implements a role protocol of `spendgate.storage.base`, never this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

from spendgate.domain.admission import Admitted, CounterState, Refused
from spendgate.domain.breaker import BreakerDecision, BreakerState
from spendgate.domain.budgets import CounterRef
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.loops import LoopBlock, LoopPolicy
from spendgate.domain.marks import Overruns, overruns, view_marks
from spendgate.domain.refusals import (
    RECENT_OUTPUTS,
    SAMPLE_SPAN,
    CallerModel,
    RefusalCombo,
    RefusalGroup,
    combo_pairs,
    estimate_groups,
)
from spendgate.domain.savings import SavingsBy, SavingsGroup, ShadowSavings
from spendgate.domain.settlement import lapsed_row, row_amounts
from spendgate.domain.totals import BlockGroup, Bucket, GroupBy, UsageGroup, UsagePoint, UsageQuery
from spendgate.errors import StorageError
from spendgate.storage.admin import AdminStores
from spendgate.storage.alerts import AlertStore
from spendgate.storage.base import (
    EXPIRE_BATCH,
    BudgetOverride,
    CounterStore,
    JointSettlement,
    KeyStore,
    Lapsed,
    Ledger,
    Lifecycle,
    MarksReader,
    RefusalEstimates,
    ReservationPlan,
    RetiredKey,
    RowKeeper,
    StoredCounter,
)
from spendgate.storage.plans import check_amounts
from spendgate.storage.shipping import Shipper, amounts_in_force

R = TypeVar("R")
log = logging.getLogger("spendgate.storage")

# `/readyz` answers within this: a store whose check has not answered by then (a server
# that is slow rather than down: a statement or socket timeout can be 30 s or more, and a
# load balancer's probe gives up long before) is reported unavailable.
CHECK_TIMEOUT_S = 2.0


class Storage:
    """The stores a gateway uses, by role. Open it once, close it once."""

    def __init__(
        self,
        keys: KeyStore,
        ledger: Ledger,
        counters: CounterStore,
        *,
        parts: Sequence[Lifecycle] = (),
        joint: JointSettlement | None = None,
        admin: AdminStores | None = None,
        alerts: AlertStore | None = None,
    ) -> None:
        self.key_store = keys
        self.alert_store = alerts  # None: this backend keeps no alerts
        self.ledger_store = ledger
        self.counter_store = counters
        self._parts = tuple(parts)  # what opens and closes, in order (closed in reverse)
        self._joint = joint
        # (a runtime-checked protocol is a slow isinstance: decided once, here)
        self._keeper = counters if joint is None and isinstance(counters, RowKeeper) else None
        self._shipper = None if self._keeper is None else Shipper(ledger, self._keeper)
        self._admin = admin  # admin tokens and the audit log (`spendgate.storage.admin`)
        # each store's health check still running, if any (`check_each`): one at a time
        self._checking: dict[str, asyncio.Future[str | None]] = {}

    @property
    def max_limit(self) -> int:
        """The largest limit the counters keep exactly (`CounterStore.max_limit`)."""
        return self.counter_store.max_limit

    @property
    def admin(self) -> AdminStores:
        """The admin tokens and audit log; StorageError for a backend that keeps none."""
        if self._admin is None:
            raise StorageError(
                "this storage backend keeps no admin tokens or audit log: admin changes "
                "cannot be audited (use the SQLite backend for keys and the ledger)"
            )
        return self._admin

    @classmethod
    def split(cls, records: Storage, counters: Storage) -> Storage:
        """Keys and the ledger from ``records``, counters from ``counters`` (two systems:
        settlement in two halves)."""
        return cls(
            records.key_store,
            records.ledger_store,
            counters.counter_store,
            parts=[*records._parts, *counters._parts],
            admin=records._admin,
            alerts=records.alert_store,
        )

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Connect and apply pending migrations, store by store."""
        opened: list[Lifecycle] = []
        try:
            for part in self._parts:
                await part.open()
                opened.append(part)
        except BaseException:
            for part in reversed(opened):
                await part.close()
            raise

    async def close(self) -> None:
        """Flush every pending write, then release connections."""
        if self._shipper is not None:
            await self._shipper.close()
        for part in reversed(self._parts):
            await part.close()

    async def release_memory(self) -> None:
        """Give back the memory its parts hold only to go faster (caches), where they can
        (SQLite's page caches); the gateway asks when it goes idle (`spendgate.services.idle`)."""
        for part in self._parts:
            release = getattr(part, "release_memory", None)
            if release is not None:
                await release()

    async def check(self) -> None:
        """Raise StorageError unless every store can serve requests now (`/readyz`)."""
        await self.key_store.check()
        await self.ledger_store.check()
        await self.counter_store.check()

    async def check_each(self, within_s: float = CHECK_TIMEOUT_S) -> dict[str, str | None]:
        """Each store by name (``storage``: keys and ledger; ``counters``: live counters)
        with the error that failed its check, or None if it can serve now (`/readyz`).

        Answers within ``within_s``: a check still running then counts as failed, and is
        left to finish in the background (cancelling it could itself wait on the slow
        server); the next call waits on that same check instead of starting another, so
        probes of a stalled server never pile up on its connections."""
        running: dict[str, asyncio.Future[str | None]] = {}
        for name, checks in (
            ("storage", (self.key_store.check, self.ledger_store.check)),
            ("counters", (self.counter_store.check,)),
        ):
            check = self._checking.get(name)
            if check is None or check.done():
                check = asyncio.ensure_future(_first_failure(checks))
                check.add_done_callback(_retrieved)
                self._checking[name] = check
            running[name] = check
        if not all(check.done() for check in running.values()):
            await asyncio.wait(running.values(), timeout=within_s)
        return {
            name: (
                f"no answer within {within_s:g} s"
                if not check.done() or check.cancelled()
                else check.result()
            )
            for name, check in running.items()
        }

    # -- what spans two roles ---------------------------------------------------------

    async def settle(self, reservation_id: str, amounts: tuple[int, ...], row: LedgerRow) -> bool:
        """Write the request's row and charge its reservation (see the module docstring).
        False, writing nothing, if the reservation is already settled or lapsed."""
        if any(amount < 0 for amount in amounts):
            raise ValueError(f"negative settlement amounts for {reservation_id!r}: {amounts}")
        if self._joint is not None:
            return await self._joint.settle(reservation_id, amounts, row)
        held = await self.counter_store.holding(reservation_id)
        if held is None:
            return False
        check_amounts(reservation_id, held, amounts)
        outcome = await self._write_row(held, row, amounts)
        return await self.counter_store.settle(reservation_id, outcome)

    async def _write_row(
        self, held: Sequence[StoredCounter], row: LedgerRow, amounts: Sequence[int]
    ) -> tuple[int, ...]:
        """The ledger half: the amounts to charge, those of the row in force."""
        [added] = await self.ledger_store.append([row])
        if added:
            return tuple(amounts)
        return await amounts_in_force(self.ledger_store, held, row)

    # -- charged first, written after (`RowKeeper`) -------------------------------------

    @property
    def keeps_rows(self) -> RowKeeper | None:
        """The counter store, if it can charge a reservation before its row is written."""
        return self._keeper

    async def charge_first(
        self, reservation_id: str, amounts: tuple[int, ...], row: LedgerRow, due: timedelta
    ) -> tuple[StoredCounter, ...] | None:
        """Settle the reservation's counters now, keeping ``row`` with them until `ship`
        writes it to the ledger (or, past ``due``, a sweeper does). What the reservation
        held; None if this backend keeps no rows or the reservation has ended (then
        `settle`, as ever)."""
        keeper = self.keeps_rows
        if keeper is None:
            return None
        if any(amount < 0 for amount in amounts):
            raise ValueError(f"negative settlement amounts for {reservation_id!r}: {amounts}")
        held = await self.counter_store.holding(reservation_id)
        if held is None:
            return None
        check_amounts(reservation_id, held, amounts)
        if not await keeper.charge(reservation_id, amounts, row, due):
            return None
        return held

    async def ship(
        self,
        reservation_id: str,
        held: Sequence[StoredCounter],
        amounts: tuple[int, ...],
        row: LedgerRow,
    ) -> None:
        """Write a row charged first (`charge_first`) to the ledger, then have the counter
        store forget it (`RowKeeper.forget_soon`). If another row for the request is in
        force (a sweeper wrote the lapsed lease's while this gateway stalled), the counters
        are corrected to it. The row goes with the others shipped within a few ms
        (`spendgate.storage.shipping`); returns once it is written."""
        if self._shipper is None:
            raise StorageError("this storage keeps no rows with its counters")
        await self._shipper.ship(reservation_id, held, amounts, row)

    @contextlib.contextmanager
    def shipping_now(self) -> Iterator[None]:
        """Within: rows charged first go to the ledger at once, none waiting for others
        (`Gateway.settled`)."""
        if self._shipper is None:
            yield
            return
        with self._shipper.hurried():
            yield

    async def _write_kept(self, keeper: RowKeeper, now: datetime) -> int:
        """Rows charged first and not written in time (their gateway died, or the ledger
        was down): written now, once each, and forgotten."""
        written = 0
        while True:
            rows = await keeper.unwritten(now, EXPIRE_BATCH)
            if rows:
                await self.ledger_store.append(rows)
                await keeper.forget([row.request_id for row in rows])
            written += len(rows)
            if len(rows) < EXPIRE_BATCH:
                return written

    async def sweep(self, now: datetime) -> list[LedgerRow]:
        """Settle every reservation whose lease expired before ``now``; the rows in force
        of those this call settled (lapsed rows, or rows written before a crash). Rows
        charged first and kept past their due time (`RowKeeper`) are written too."""
        if self._joint is not None:
            return await self._joint.sweep(now)
        keeper = self.keeps_rows
        if keeper is not None:
            await self._write_kept(keeper, now)
        done: list[LedgerRow] = []
        while True:
            batch = await self.counter_store.lapsed(now, EXPIRE_BATCH)
            done.extend(await self._settle_lapsed(batch))
            if len(batch) < EXPIRE_BATCH:
                return done

    async def _settle_lapsed(self, batch: Sequence[Lapsed]) -> list[LedgerRow]:
        rows = [lapsed_row(item.template, item.worst, item.ceiling) for item in batch]
        added = await self.ledger_store.append(rows) if rows else []
        done: list[LedgerRow] = []
        for item, row, fresh in zip(batch, rows, added, strict=True):
            units = [c[3] for c in item.counters]
            in_force = row if fresh else await self.ledger_store.row(row.request_id) or row
            if await self.counter_store.settle(item.reservation_id, row_amounts(units, in_force)):
                done.append(in_force)
        return done

    async def expire_leases(self, now: datetime) -> int:
        """`sweep`, counted."""
        return len(await self.sweep(now))

    # -- one role each ----------------------------------------------------------------

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        return await self.counter_store.reserve(plan)

    async def release(self, reservation_id: str) -> bool:
        return await self.counter_store.release(reservation_id)

    async def renew_leases(
        self, owner: str, expires_at: datetime, keep_lapsing: frozenset[str] = frozenset()
    ) -> int:
        return await self.counter_store.renew_leases(owner, expires_at, keep_lapsing)

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        return await self.counter_store.counter_states(refs, now)

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        return await self.counter_store.active_members(budget, since_ms)

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        return await self.counter_store.prune_counters(keep_from_ms)

    async def set_override(self, override: BudgetOverride) -> None:
        await self.counter_store.set_override(override)

    async def clear_overrides(self, budget: str) -> int:
        return await self.counter_store.clear_overrides(budget)

    async def overrides(self, now: datetime) -> list[BudgetOverride]:
        return await self.counter_store.overrides(now)

    async def reset_budget(self, budget: str, member: str | None, since_ms: int) -> int:
        return await self.counter_store.reset_budget(budget, member, since_ms)

    async def loop_block(self, key_id: str, fingerprint: str) -> LoopBlock | None:
        return await self.counter_store.loop_block(key_id, fingerprint)

    async def strike_loop(
        self, policy: LoopPolicy, *, key_id: str, fingerprint: str, model: str, now: datetime
    ) -> LoopBlock:
        return await self.counter_store.strike_loop(
            policy, key_id=key_id, fingerprint=fingerprint, model=model, now=now
        )

    async def loop_blocks(self) -> list[LoopBlock]:
        return await self.counter_store.loop_blocks()

    async def release_loop(self, block_id: str) -> LoopBlock | None:
        return await self.counter_store.release_loop(block_id)

    async def prune_loops(self, ended_before: datetime) -> int:
        return await self.counter_store.prune_loops(ended_before)

    async def update_breaker(self, key_id: str, model: str, decide: BreakerDecision[R]) -> R:
        return await self.counter_store.update_breaker(key_id, model, decide)

    async def breakers(self) -> list[BreakerState]:
        return await self.counter_store.breakers()

    async def prune_breakers(self, failed_before_ms: int) -> int:
        return await self.counter_store.prune_breakers(failed_before_ms)

    async def record(self, row: LedgerRow) -> None:
        await self.ledger_store.record(row)

    async def usage(self, query: UsageQuery) -> list[UsageGroup]:
        return await self.ledger_store.usage(query)

    async def usage_series(
        self, since: datetime, until: datetime, bucket: Bucket, group_by: GroupBy
    ) -> list[UsagePoint]:
        return await self.ledger_store.usage_series(since, until, bucket, group_by)

    async def blocks(self, since: datetime, until: datetime) -> list[BlockGroup]:
        return await self.ledger_store.blocks(since, until)

    async def marked(self, since: datetime, until: datetime) -> list[LedgerRow]:
        return await self.ledger_store.marked(since, until)

    async def view_marks(
        self, since: datetime, recent: datetime, until: datetime
    ) -> list[LedgerRow]:
        """The marked rows a budgets view reads (`spendgate.domain.marks`), oldest first."""
        if isinstance(self.ledger_store, MarksReader):
            return await self.ledger_store.view_marks(since, recent, until)
        return view_marks(await self.ledger_store.marked(since, until), recent)

    async def overruns(self, since: datetime, until: datetime) -> Overruns:
        """Per (budget name, scope, member), the rows settled above that budget over
        ``[since, until)`` (`spendgate.domain.marks.overruns`)."""
        if isinstance(self.ledger_store, MarksReader):
            return await self.ledger_store.overruns(since, until)
        return overruns(await self.ledger_store.marked(since, until), since, until)

    async def savings(
        self, since: datetime, until: datetime, by: SavingsBy
    ) -> tuple[list[SavingsGroup], list[ShadowSavings]]:
        return await self.ledger_store.savings(since, until, by)

    async def recent_outputs(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, list[int]]:
        return await self.ledger_store.recent_outputs(pairs, since, until, limit)

    async def output_medians(
        self, pairs: Sequence[tuple[str, str]], since: datetime, until: datetime, limit: int
    ) -> dict[CallerModel, int]:
        return await self.ledger_store.output_medians(pairs, since, until, limit)

    async def refusals(self, since: datetime, until: datetime) -> list[RefusalCombo]:
        return await self.ledger_store.refusals(since, until)

    async def refusal_estimates(self, since: datetime, until: datetime) -> dict[str, RefusalGroup]:
        """Per name: the distinct refused requests over ``[since, until)``, their worst
        cases and their estimate (`spendgate.domain.refusals.estimate_groups`)."""
        if isinstance(self.ledger_store, RefusalEstimates):
            return await self.ledger_store.refusal_estimates(since, until)
        combos = await self.ledger_store.refusals(since, until)
        typical = await self.ledger_store.output_medians(
            combo_pairs(combos), until - SAMPLE_SPAN, until, RECENT_OUTPUTS
        )
        # a median's median is itself: the estimate reads the medians as one-value samples
        return estimate_groups(combos, {who: [value] for who, value in typical.items()})

    async def ledger(
        self, since: datetime, until: datetime, *, limit: int | None = None
    ) -> list[LedgerRow]:
        return await self.ledger_store.ledger(since, until, limit=limit)

    async def latest_of_key(self, key_id: str, limit: int) -> list[LedgerRow]:
        return await self.ledger_store.latest_of_key(key_id, limit)

    async def insert_key(self, key: ApiKey) -> None:
        await self.key_store.insert_key(key)

    async def update_key(self, key: ApiKey) -> None:
        await self.key_store.update_key(key)

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        return await self.key_store.key_by_hash(key_hash)

    async def retired_key(self, key_hash: str) -> RetiredKey | None:
        return await self.key_store.retired_key(key_hash)

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        return await self.key_store.key_by_id(key_id)

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        return await self.key_store.list_keys(include_revoked=include_revoked)


async def _first_failure(checks: Sequence[Callable[[], Awaitable[None]]]) -> str | None:
    """The error of the first of ``checks`` that fails, or None."""
    for check in checks:
        try:
            await check()
        except StorageError as exc:
            return str(exc)
    return None


def _retrieved(check: asyncio.Future[str | None]) -> None:
    """A check that failed unexpectedly after its caller stopped waiting: its error is
    retrieved (else asyncio logs it as never retrieved) and logged."""
    if not check.cancelled() and check.exception() is not None:
        log.error("a storage health check failed", exc_info=check.exception())
