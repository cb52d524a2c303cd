"""The counter store on Redis (`RedisCounters`): budgets, limits, concurrency, loop
blocks, reservations and their leases, overrides; keys and the ledger live elsewhere
(`Storage.split`: settlement in two halves, the sweeper repairing a crash between them).

Each admission decision is one ``EVALSHA`` of ``reserve_v2.lua`` (its arguments and answer:
`spendgate.storage.redis.decision`): it reads every counter of the request with its
effective limit, makes `spendgate.domain.admission.decide`'s decision in exact integer
arithmetic, and records the reservation and its lease, all or nothing (a script runs alone
on the server). The Python side then runs `decide` on the
states the script read and checks that both agree; a disagreement is a bug, reported as a
`StorageError` after the reservation is released.

Time: every comparison with "now" (lease expiry, overrides in force, rolling windows) is
made with the Redis server's clock (``TIME``), so replicas whose clocks differ still agree.
A lease's length comes from the caller (``expires_at - clock.now()``) and is added to the
server's time. With an injected clock (tests: anything but `SystemClock`) the script is
given that clock's time instead, and windows come as the caller computed them.

Integers: Lua numbers are doubles, exact below 2^53. Limits, overrides and amounts at or
above 2^53 (nano-dollars: about $9M per counter) are refused with a `StorageError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

import orjson
from redis.exceptions import RedisError, WatchError

from spendgate.clock import Clock, SystemClock, from_ms, to_ms
from spendgate.domain.admission import Admitted, CounterState, Refused, decide
from spendgate.domain.breaker import BreakerDecision, BreakerState
from spendgate.domain.budgets import CounterRef
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.loops import LoopBlock, LoopPolicy, loop_id
from spendgate.errors import StorageError
from spendgate.storage import codec
from spendgate.storage.base import BudgetOverride, Lapsed, ReservationPlan, StoredCounter
from spendgate.storage.plans import check_amounts, check_plan
from spendgate.storage.redis.bounds import EXACT, check_exact
from spendgate.storage.redis.connect import Scripts, Target, client, close, parse
from spendgate.storage.redis.decision import held_of, reserve_args, rolling, state, verdict

log = logging.getLogger("spendgate.storage.redis")

# Budgets pruned per script call: one call holds Redis for its whole run (every other
# gateway's reservations wait), so a tick's pruning is cut into calls of about a
# millisecond each (a listed per-user budget has one member: one HGETALL).
PRUNE_BATCH = 500
FORGET_BATCH = 256  # written rows a `charge` forgets in passing, at most
READY_PROBE_MS = 60_000  # how long the key a readiness check writes is kept
T = TypeVar("T")
R = TypeVar("R")


class RedisCounters:
    """`CounterStore` on Redis. Opened once, closed once."""

    max_limit = EXACT - 1  # Lua's doubles: every integer below 2^53 exactly

    def __init__(self, url: str, clock: Clock) -> None:
        self._target: Target = parse(url)
        self._clock = clock
        self._server_time = isinstance(clock, SystemClock)
        self._scripts = Scripts()
        self._redis: Any = None
        tag = "{" + self._target.prefix + "}"
        self._tag = tag
        self._leases = f"{tag}:leases"
        self._overrides = f"{tag}:overrides"
        self._sequence = f"{tag}:seq"
        self._loops = f"{tag}:loops"
        self._breakers = f"{tag}:breakers"  # "key_id model" (JSON) -> the state (JSON)
        self._unwritten = f"{tag}:unwritten"  # rows charged before written (`charge`)
        self._ready = f"{tag}:ready"  # written by each readiness check (`check`)
        # admitted here, not yet ended here: id -> (owner, what it holds)
        self._live: dict[str, tuple[str, tuple[StoredCounter, ...]]] = {}
        self._unknown: set[str] = set()  # reserve outcomes lost in a failure: to release
        self._written: list[str] = []  # kept rows the ledger has: to forget (`forget_soon`)

    # -- keys -------------------------------------------------------------------------

    def _counter_key(self, budget: str, member: str, unit: str) -> str:
        return f"{self._tag}:c:" + codec.dumps([budget, member, unit])

    def _members_key(self, budget: str) -> str:
        return f"{self._tag}:m:" + budget

    def _reservation_key(self, reservation_id: str) -> str:
        return f"{self._tag}:r:" + reservation_id

    def _row_key(self, reservation_id: str) -> str:
        return f"{self._tag}:w:" + reservation_id

    def _now_arg(self) -> str:
        return "" if self._server_time else str(to_ms(self._clock.now()))

    # -- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        if self._redis is not None:
            raise StorageError("the Redis counter store can be opened only once")
        self._redis = client(self._target)
        await self._call(lambda r: self._scripts.load(r))

    async def close(self) -> None:
        if self._redis and self._written:
            with contextlib.suppress(StorageError):  # left to a sweeper (idempotent)
                await self._forget_written()
        if self._redis is not None:
            redis, self._redis = self._redis, False
            await close(redis)

    async def _call(self, work: Callable[[Any], Awaitable[T]]) -> T:
        if not self._redis:
            state = "closed" if self._redis is False else "not open"
            raise StorageError(f"the Redis counter store is {state}")
        task = asyncio.current_task()
        cancels = task.cancelling() if task is not None else 0
        try:
            result = await work(self._redis)
        except (RedisError, OSError) as exc:
            if task is not None and task.cancelling() > cancels:
                raise asyncio.CancelledError from exc  # see below
            raise StorageError(f"Redis counters: {type(exc).__name__}: {exc}") from exc
        if task is not None and task.cancelling() > cancels:
            # A cancellation that met redis-py's own socket timeout came out as a
            # TimeoutError that its retry then absorbed (Python 3.11's asyncio.timeout):
            # the cancel must win, or a task stopped at shutdown would carry on (measured:
            # the lease keeper never stopped in about 1 run in 10 of test_redis_outage).
            raise asyncio.CancelledError
        return result

    async def _run(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return await self._call(lambda r: self._scripts.run(r, name, keys, args))

    async def check(self) -> None:
        """Whether the server takes writes, as every reservation needs: a PING answers on
        a replica (a plain URL left on a primary demoted by a failover), on a primary
        past its ``maxmemory`` (OOM) or one refusing writes since a failed snapshot
        (MISCONF), while every script that writes is refused. So the check writes: one
        key, the same for every gateway of the prefix, expiring in a minute."""
        await self._call(lambda r: r.set(self._ready, b"1", px=READY_PROBE_MS))

    # -- the request path -------------------------------------------------------------

    async def reserve(self, plan: ReservationPlan) -> Admitted | Refused:
        check_plan(plan)
        cap_only = decide(plan.worst, (), plan.caps, plan.min_output)
        if isinstance(cap_only, Refused):  # the request caps alone refuse it: no trip
            return cap_only
        check_exact(plan)
        keys = [self._reservation_key(plan.reservation_id), self._leases, self._overrides]
        for ref in plan.counters:
            budget = ref.budget
            keys.append(self._counter_key(budget.name, ref.member, budget.unit.value))
            keys.append(self._members_key(budget.name))
        lease_ms = max(0, to_ms(plan.expires_at) - to_ms(self._clock.now()))
        args = reserve_args(plan, self._now_arg(), lease_ms, cap_only.ceiling, self._server_time)
        call = asyncio.ensure_future(self._run("reserve", keys, args))
        try:
            raw = await asyncio.shield(call)
        except asyncio.CancelledError:  # the script may have run: give it back at once
            call.add_done_callback(lambda _: self._abandon(plan.reservation_id))
            raise
        except StorageError:
            # The script may have run and its answer been lost (a connection cut): the
            # caller refuses the request, so the reservation, if any, is released as soon
            # as Redis answers again (`renew_leases`), never renewed or left to lapse.
            self._unknown.add(plan.reservation_id)
            raise
        if int(raw[0]) < 0:
            raise StorageError(f"cannot store reservation {plan.reservation_id!r}: it exists")
        decision, agrees = verdict(plan, raw, self._server_time)
        if not agrees:
            if int(raw[0]) == 1:  # the script reserved it
                await self.release(plan.reservation_id)
            raise StorageError(
                f"the Redis reserve script and decide() disagree on {plan.reservation_id!r}: "
                f"{raw[:2]} vs {decision!r}"
            )
        if isinstance(decision, Admitted):
            self._live[plan.reservation_id] = (plan.owner, held_of(decision))
        return decision

    def _abandon(self, reservation_id: str) -> None:
        self._unknown.add(reservation_id)
        if self._redis:
            task = asyncio.ensure_future(self._release_unknown())
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _release_unknown(self) -> None:
        for reservation_id in sorted(self._unknown):
            await self.release(reservation_id)
            self._unknown.discard(reservation_id)

    async def holding(self, reservation_id: str) -> tuple[StoredCounter, ...] | None:
        """A reservation this process admitted and has not ended is answered from memory
        (no round trip on the settlement path). If another replica's sweeper settled it
        meanwhile (its lease lapsed), the settlement that follows finds the sweeper's row
        in the ledger (idempotent by request id) and `settle` then changes nothing: the
        same outcome as answering None here."""
        known = self._live.get(reservation_id)
        if known is not None:
            return known[1]
        key = self._reservation_key(reservation_id)
        found = await self._call(lambda r: r.hmget(key, "counters", "buckets", "amounts"))
        return None if found[0] is None else _held(found[0], found[1], found[2])

    async def _end(self, reservation_id: str, amounts: Sequence[int] | None) -> bool:
        keys = [self._reservation_key(reservation_id), self._leases]
        charges = [] if amounts is None else [str(int(a)) for a in amounts]
        args = ["", reservation_id, -1 if amounts is None else len(charges)]
        done = await self._run("settle", keys, args + charges)
        if isinstance(done, list):
            held = (("", "", 0, "", 0),) * int(done[1])
            check_amounts(reservation_id, held, list(amounts or ()))
        self._live.pop(reservation_id, None)
        return bool(done)

    async def settle(self, reservation_id: str, amounts: Sequence[int]) -> bool:
        return await self._end(reservation_id, amounts)

    # -- rows kept until written (`spendgate.storage.base.RowKeeper`) --------------------

    async def charge(
        self, reservation_id: str, amounts: Sequence[int], row: LedgerRow, due: timedelta
    ) -> bool:
        """`settle`, and in the same script the row kept here until `forget`: a sweeper
        writes it to the ledger once ``due`` has passed (`unwritten`). The rows left to
        forget (`forget_soon`) are forgotten by the same script."""
        written = self._written[:FORGET_BATCH]
        del self._written[:FORGET_BATCH]
        keys = [
            self._reservation_key(reservation_id),
            self._leases,
            self._unwritten,
            self._row_key(reservation_id),
            *(self._row_key(i) for i in written),
        ]
        charges = [int(a) for a in amounts]
        due_ms = max(0, due // timedelta(milliseconds=1))
        args = [self._now_arg(), reservation_id, due_ms, codec.dump_template(row), len(charges)]
        try:
            done = await self._run("charge", keys, [*args, *charges, *written])
        except BaseException:
            self._written[:0] = written  # not known forgotten: still to forget
            raise
        if isinstance(done, list):
            held = (("", "", 0, "", 0),) * int(done[1])
            check_amounts(reservation_id, held, list(amounts))
        self._live.pop(reservation_id, None)
        return bool(done)

    def forget_soon(self, reservation_ids: Sequence[str]) -> None:
        """`forget`, without a round trip of its own: the rows go with this process's next
        `charge` (its script forgets them in passing), or its next lease tick
        (`renew_leases`), or `close`, whichever comes first. A row forgotten late is only
        written again by a sweeper once due, which the ledger ignores (idempotent by
        request id); the lease tick comes at least four times a lease, and rows are due
        a lease after their charge."""
        self._written.extend(reservation_ids)

    async def _forget_written(self) -> None:
        written, self._written = self._written, []
        try:
            await self.forget(written)
        except BaseException:
            self._written[:0] = written
            raise

    async def unwritten(self, now: datetime, limit: int) -> list[LedgerRow]:
        """Rows charged before they were written and due now, oldest first."""
        now_arg = "" if self._server_time else str(to_ms(now))
        raw = await self._run("unwritten", [self._unwritten], [now_arg, limit, self._row_key("")])
        return [codec.load_template(raw[i + 1]) for i in range(0, len(raw), 2)]

    async def forget(self, reservation_ids: Sequence[str]) -> None:
        """The ledger has these rows: drop them here (idempotent)."""
        if reservation_ids:  # a script: cheaper for redis-py than a MULTI pipeline
            await self._run("forget", [self._unwritten], ["", self._row_key(""), *reservation_ids])

    async def correct(self, held: Sequence[StoredCounter], deltas: Sequence[int]) -> None:
        """Add ``deltas`` to what the counters of ``held`` spent in their buckets: a row
        charged before it was written met another row in force for its request."""

        async def work(r: Any) -> None:
            async with r.pipeline(transaction=True) as pipe:
                for (budget, member, bucket, unit, _), delta in zip(held, deltas, strict=True):
                    if delta:
                        pipe.hincrby(self._counter_key(budget, member, unit), f"s{bucket}", delta)
                await pipe.execute()

        await self._call(work)

    async def release(self, reservation_id: str) -> bool:
        return await self._end(reservation_id, None)

    # -- leases -----------------------------------------------------------------------

    async def renew_leases(
        self, owner: str, expires_at: datetime, keep_lapsing: frozenset[str] = frozenset()
    ) -> int:
        """Extends the leases of ``owner``'s reservations that this store admitted, first
        releasing those whose reservation outcome was lost in a failure (`reserve`): a
        lease no one here knows of is never renewed. Rows left to forget (`forget_soon`)
        are forgotten first."""
        if self._written:
            await self._forget_written()
        await self._release_unknown()
        lease_ms = max(0, to_ms(expires_at) - to_ms(self._clock.now()))
        ids = sorted(i for i, (o, _) in self._live.items() if o == owner and i not in keep_lapsing)
        args = [self._now_arg(), lease_ms, self._reservation_key(""), *ids]
        renewed, gone = await self._run("renew", [self._leases], args)
        for reservation_id in gone:
            self._live.pop(reservation_id.decode(), None)
        return int(renewed)

    async def lapsed(self, now: datetime, limit: int) -> list[Lapsed]:
        """With the server's clock, ``now`` is the server's: the caller's is not used."""
        now_arg = "" if self._server_time else str(to_ms(now))
        raw = await self._run("lapsed", [self._leases], [now_arg, limit, self._reservation_key("")])
        out = []
        for i in range(0, len(raw), 7):
            rid, counters, buckets, amounts, ceiling, worst, template = raw[i : i + 7]
            out.append(
                Lapsed(
                    rid.decode(),
                    _held(counters, buckets, amounts),
                    int(ceiling),
                    codec.load_worst(worst),
                    codec.load_template(template),
                )
            )
        return out

    # -- reads ------------------------------------------------------------------------

    async def counter_states(
        self, refs: tuple[CounterRef, ...], now: datetime
    ) -> list[CounterState]:
        if not refs:
            return []
        keys = [self._overrides]
        args: list[Any] = ["" if self._server_time else str(to_ms(now)), len(refs)]
        for ref in refs:
            keys.append(self._counter_key(ref.budget.name, ref.member, ref.budget.unit.value))
            length, width = rolling(ref) if self._server_time else (0, 0)
            args += [
                ref.budget.name,
                ref.budget.limit,
                length if width else ref.window.since_ms,
                width,
            ]
        raw = await self._run("states", keys, args)
        return [state(ref, raw[6 * i : 6 * i + 6], self._server_time) for i, ref in enumerate(refs)]

    async def active_members(self, budget: str, since_ms: int) -> list[str]:
        async def work(r: Any) -> list[str]:
            keys = sorted(k.decode() for k in await r.smembers(self._members_key(budget)))
            async with r.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.hkeys(key)
                fields = await pipe.execute()
            found = set()
            for key, names in zip(keys, fields, strict=True):
                if any(int(name[1:]) >= since_ms for name in names):
                    found.add(orjson.loads(key.partition(":c:")[2])[1])
            return sorted(found)

        return await self._call(work)

    async def prune_counters(self, keep_from_ms: dict[str, int]) -> int:
        """``prune_v1.lua`` over `PRUNE_BATCH` budgets a call: a config may list 100,000
        budgets, and every lease tick names them all (one call each cost 100,000 round
        trips a tick)."""
        pruned = 0
        listed = list(keep_from_ms.items())
        for start in range(0, len(listed), PRUNE_BATCH):
            batch = listed[start : start + PRUNE_BATCH]
            keys = [self._members_key(budget) for budget, _ in batch]
            pruned += int(await self._run("prune", keys, ["", *(since for _, since in batch)]))
        return pruned

    async def reset_budget(self, budget: str, member: str | None, since_ms: int) -> int:
        start = "" if member is None else self._counter_key(budget, member, "")[:-3]
        keys = [self._members_key(budget)]
        return int(await self._run("maintain", keys, ["", "reset", since_ms, start]))

    # -- operator changes -------------------------------------------------------------

    async def set_override(self, override: BudgetOverride) -> None:
        if not 0 <= override.limit < EXACT:
            raise StorageError(
                f"override of {override.budget!r}: {override.limit} is beyond what the Redis "
                f"counter store keeps exactly (below 2^53 = {EXACT:,})"
            )
        expires = -1 if override.expires_at is None else to_ms(override.expires_at)
        args = ["", override.budget, to_ms(override.created_at), override.limit, expires]
        await self._run("override", [self._overrides, self._sequence], args)

    async def clear_overrides(self, budget: str) -> int:
        async def work(r: Any) -> int:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hget(self._overrides, budget)
                pipe.hdel(self._overrides, budget)
                raw, _ = await pipe.execute()
            return 0 if raw is None else len(orjson.loads(raw))

        return await self._call(work)

    async def overrides(self, now: datetime) -> list[BudgetOverride]:
        now_ms = to_ms(now)
        raw = await self._call(lambda r: r.hgetall(self._overrides))
        out = []
        for name, value in sorted(raw.items()):
            live = [o for o in orjson.loads(value) if o[3] < 0 or o[3] > now_ms]
            if live:
                created, _, limit, expires = max(live, key=lambda o: (o[0], o[1]))
                at = None if expires < 0 else from_ms(expires)
                out.append(BudgetOverride(name.decode(), limit, at, from_ms(created)))
        return out

    # -- loop blocks ------------------------------------------------------------------

    async def loop_block(self, key_id: str, fingerprint: str) -> LoopBlock | None:
        raw = await self._call(lambda r: r.hget(self._loops, loop_id(key_id, fingerprint)))
        return None if raw is None else _block(raw)

    async def strike_loop(
        self, policy: LoopPolicy, *, key_id: str, fingerprint: str, model: str, now: datetime
    ) -> LoopBlock:
        """Read, strike and write under WATCH: a write by another process in between makes
        the transaction fail and the strike start over, so two detections strike twice."""
        block_id = loop_id(key_id, fingerprint)
        at = from_ms(to_ms(now))

        async def step(pipe: Any) -> LoopBlock:
            raw = await pipe.hget(self._loops, block_id)
            previous = None if raw is None else _block(raw)
            block = policy.strike(
                previous, key_id=key_id, fingerprint=fingerprint, model=model, now=at
            )
            pipe.multi()
            pipe.hset(self._loops, block_id, _dump_block(block))
            return block

        return await self._watched(self._loops, step)

    async def loop_blocks(self) -> list[LoopBlock]:
        raw = await self._call(lambda r: r.hgetall(self._loops))
        blocks = [_block(v) for v in raw.values()]
        return sorted(blocks, key=lambda b: (b.detected_at, b.id), reverse=True)

    async def release_loop(self, block_id: str) -> LoopBlock | None:
        async def work(r: Any) -> LoopBlock | None:
            async with r.pipeline(transaction=True) as pipe:
                pipe.hget(self._loops, block_id)
                pipe.hdel(self._loops, block_id)
                raw, _ = await pipe.execute()
            return None if raw is None else _block(raw)

        return await self._call(work)

    async def prune_loops(self, ended_before: datetime) -> int:
        limit = to_ms(ended_before)

        async def step(pipe: Any) -> int:
            raw = await pipe.hgetall(self._loops)
            ended = [k for k, v in raw.items() if orjson.loads(v)[5] < limit]
            pipe.multi()
            if ended:
                pipe.hdel(self._loops, *ended)
            return len(ended)

        return await self._watched(self._loops, step)

    # -- circuit breakers -------------------------------------------------------------

    async def update_breaker(self, key_id: str, model: str, decide: BreakerDecision[R]) -> R:
        """Read, decide and write under WATCH, as a loop's strike (`strike_loop`)."""
        field = codec.dumps([key_id, model])

        async def step(pipe: Any) -> R:
            raw = await pipe.hget(self._breakers, field)
            previous = None if raw is None else BreakerState(*orjson.loads(raw))
            state, result = decide(previous)
            pipe.multi()
            if state is None:
                pipe.hdel(self._breakers, field)
            elif state != previous:
                pipe.hset(self._breakers, field, _dump_breaker(state))
            return result

        return await self._watched(self._breakers, step)

    async def _watched(self, key: str, step: Callable[[Any], Awaitable[T]]) -> T:
        """``step`` reads ``key`` and queues its writes in a transaction under WATCH: a
        write by another process in between makes it fail and start over."""

        async def work(r: Any) -> T:
            async with r.pipeline(transaction=True) as pipe:
                while True:
                    try:
                        await pipe.watch(key)
                        result = await step(pipe)
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue

        return await self._call(work)

    async def breakers(self) -> list[BreakerState]:
        raw = await self._call(lambda r: r.hgetall(self._breakers))
        return [BreakerState(*orjson.loads(value)) for value in raw.values()]

    async def prune_breakers(self, failed_before_ms: int) -> int:
        async def step(pipe: Any) -> int:
            raw = await pipe.hgetall(self._breakers)
            idle = [k for k, v in raw.items() if orjson.loads(v)[5] < failed_before_ms]
            pipe.multi()
            if idle:
                pipe.hdel(self._breakers, *idle)
            return len(idle)

        return await self._watched(self._breakers, step)

    # -- test support -----------------------------------------------------------------

    async def drop_all(self) -> int:
        """Delete every key of this store's prefix (tests: a prefix of their own)."""

        async def work(r: Any) -> int:
            found = [k async for k in r.scan_iter(match=f"{{{self._target.prefix}}}:*", count=500)]
            return int(await r.delete(*found)) if found else 0

        return await self._call(work)


def _held(counters: bytes, buckets: bytes, amounts: bytes) -> tuple[StoredCounter, ...]:
    names = orjson.loads(counters)
    return tuple(
        (budget, member, int(bucket), unit, int(amount))
        for (budget, member, unit), bucket, amount in zip(
            names, buckets.split(b","), amounts.split(b","), strict=True
        )
    )


def _dump_block(block: LoopBlock) -> str:
    return codec.dumps(
        [
            block.key_id,
            block.fingerprint,
            block.model,
            block.strikes,
            to_ms(block.detected_at),
            to_ms(block.until),
        ]
    )


def _block(raw: bytes) -> LoopBlock:
    key_id, fingerprint, model, strikes, detected_ms, until_ms = orjson.loads(raw)
    return LoopBlock(key_id, fingerprint, model, strikes, from_ms(detected_ms), from_ms(until_ms))


def _dump_breaker(state: BreakerState) -> str:
    return codec.dumps(
        [
            state.key_id,
            state.model,
            state.failures,
            state.opened_ms,
            state.probe_until_ms,
            state.failed_ms,
        ]
    )
