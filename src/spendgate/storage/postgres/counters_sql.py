"""Budget counters, reservations and overrides on PostgreSQL: the statements, and the
steps each transaction of `spendgate.storage.postgres.counters` runs.

Locks, always taken in this order, so that no two transactions wait on each other in a
cycle: (1) the row of the reservation being ended (``DELETE ... RETURNING`` or
``FOR UPDATE SKIP LOCKED``), (2) one transaction-scoped advisory lock per counter
(budget, member, unit), in ascending key order (`lock_counters`), (3) the counter rows
themselves, written only under their advisory locks. The advisory lock covers every bucket
of a counter, including buckets with no row yet, which a row lock cannot: so the
read-decide-write of `reserve` is atomic against every other gateway on the database.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from spendgate.domain.admission import CounterState
from spendgate.domain.budgets import CounterRef
from spendgate.storage.base import StoredCounter
from spendgate.storage.postgres.database import Conn, lock_key

LOCK = "SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k"

# One row per counter, in the order asked: the window's sums, the budget's override in
# force (NULL: none) and the oldest bucket in use.
STATES = """
SELECT COALESCE(SUM(c.spent), 0)::bigint, COALESCE(SUM(c.reserved), 0)::bigint, (
    SELECT limit_amount FROM budget_overrides AS o
    WHERE o.budget = r.budget AND (o.expires_ms IS NULL OR o.expires_ms > $5)
    ORDER BY o.created_ms DESC, o.id DESC LIMIT 1
), MIN(c.bucket_ms) FILTER (WHERE c.spent > 0 OR c.reserved > 0)
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])
    WITH ORDINALITY AS r(budget, member, unit, since, n)
LEFT JOIN budget_counters AS c ON c.budget = r.budget AND c.member = r.member
    AND c.unit = r.unit AND c.bucket_ms >= r.since
GROUP BY r.n, r.budget ORDER BY r.n
"""

# Adds each amount to ``reserved`` (the rows created if need be).
ADD_RESERVED = """
INSERT INTO budget_counters (budget, member, unit, bucket_ms, spent, reserved)
SELECT budget, member, unit, bucket_ms, 0, amount
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
    AS t(budget, member, unit, bucket_ms, amount)
ON CONFLICT (budget, member, unit, bucket_ms)
DO UPDATE SET reserved = budget_counters.reserved + excluded.reserved
"""
INSERT_RESERVATION = """
INSERT INTO reservations (id, owner, expires_ms, created_ms, counters, ceiling, worst, template)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
"""
TAKE = "DELETE FROM reservations WHERE id = $1 RETURNING counters"
HOLDING = "SELECT counters FROM reservations WHERE id = $1"
# Charge ``spent`` and release ``reserved``; the keys of the rows found (a row missing,
# possible only for a zero reservation pruned meanwhile, is created by `CHARGE_MISSING`).
CHARGE = """
UPDATE budget_counters AS c SET spent = c.spent + t.spent, reserved = c.reserved - t.release
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::bigint[])
    AS t(budget, member, unit, bucket_ms, spent, release)
WHERE c.budget = t.budget AND c.member = t.member AND c.unit = t.unit
    AND c.bucket_ms = t.bucket_ms
RETURNING c.budget, c.member, c.unit, c.bucket_ms
"""
CHARGE_MISSING = """
INSERT INTO budget_counters (budget, member, unit, bucket_ms, spent, reserved)
VALUES ($1, $2, $3, $4, $5, 0)
ON CONFLICT (budget, member, unit, bucket_ms)
DO UPDATE SET spent = budget_counters.spent + excluded.spent
"""
LAPSED = """
SELECT id, counters, ceiling, worst, template FROM reservations
WHERE expires_ms < $1 ORDER BY expires_ms, id LIMIT $2
"""
LAPSED_LOCKED = LAPSED.strip() + " FOR UPDATE SKIP LOCKED"
DELETE_RESERVATION = "DELETE FROM reservations WHERE id = $1"
RENEW = (
    "UPDATE reservations SET expires_ms = GREATEST(expires_ms, $1) "
    "WHERE owner = $2 AND NOT (id = ANY($3::text[]))"
)
ACTIVE_MEMBERS = (
    'SELECT DISTINCT member COLLATE "C" AS m FROM budget_counters '
    "WHERE budget = $1 AND bucket_ms >= $2 ORDER BY m"
)
PRUNE_COUNTERS = "DELETE FROM budget_counters WHERE budget = $1 AND bucket_ms < $2 AND reserved = 0"
PRUNABLE = "SELECT DISTINCT budget FROM budget_counters WHERE bucket_ms < $1 AND reserved = 0"
INSERT_OVERRIDE = (
    "INSERT INTO budget_overrides (budget, limit_amount, expires_ms, created_ms) "
    "VALUES ($1, $2, $3, $4)"
)
PRUNE_OVERRIDES = (
    "DELETE FROM budget_overrides "
    "WHERE budget = $1 AND ($2 OR (expires_ms IS NOT NULL AND expires_ms <= $3))"
)
CLEAR_OVERRIDES = "DELETE FROM budget_overrides WHERE budget = $1"
OVERRIDES = """
SELECT DISTINCT ON (budget COLLATE "C") budget, limit_amount, expires_ms, created_ms
FROM budget_overrides WHERE expires_ms IS NULL OR expires_ms > $1
ORDER BY budget COLLATE "C", created_ms DESC, id DESC
"""
RESET_ALL = "UPDATE budget_counters SET spent = 0 WHERE budget = $1 AND bucket_ms >= $2"
RESET_MEMBER = (
    "UPDATE budget_counters SET spent = 0 WHERE budget = $1 AND member = $2 AND bucket_ms >= $3"
)


def counter_keys(counters: Iterable[tuple[str, str, str]]) -> list[int]:
    """Advisory-lock keys of (budget, member, unit) counters, deduplicated, ascending."""
    return sorted({lock_key(budget, member, unit) for budget, member, unit in counters})


async def lock_counters(conn: Conn, held: Iterable[StoredCounter]) -> None:
    keys = counter_keys((c[0], c[1], c[3]) for c in held)
    if keys:
        await conn.execute(LOCK, keys)


async def lock_refs(conn: Conn, refs: Sequence[CounterRef]) -> None:
    keys = counter_keys((r.budget.name, r.member, r.budget.unit.value) for r in refs)
    if keys:
        await conn.execute(LOCK, keys)


async def read_states(conn: Conn, refs: Sequence[CounterRef], now_ms: int) -> list[CounterState]:
    """Every counter's state in the order of ``refs``, in one statement."""
    if not refs:
        return []
    rows = await conn.fetch(
        STATES,
        [ref.budget.name for ref in refs],
        [ref.member for ref in refs],
        [ref.budget.unit.value for ref in refs],
        [ref.window.since_ms for ref in refs],
        now_ms,
    )
    states = []
    for ref, (spent, reserved, override, oldest) in zip(refs, rows, strict=True):
        limit = ref.budget.limit if override is None else override
        states.append(CounterState(ref, limit, spent, reserved, oldest))
    return states


def _columns(
    counters: Sequence[StoredCounter],
) -> tuple[list[str], list[str], list[str], list[int]]:
    return (
        [c[0] for c in counters],
        [c[1] for c in counters],
        [c[3] for c in counters],
        [c[2] for c in counters],
    )


async def add_reserved(conn: Conn, stored: Sequence[StoredCounter]) -> None:
    ordered = sorted(stored)  # row locks in one order in every transaction
    await conn.execute(ADD_RESERVED, *_columns(ordered), [c[4] for c in ordered])


async def charge(conn: Conn, counters: Sequence[StoredCounter], actuals: Sequence[int]) -> None:
    """Release what each counter reserved and charge it ``actual`` (its advisory locks
    held: `lock_counters`)."""
    if not counters:
        return
    pairs = sorted(zip(counters, actuals, strict=True))
    ordered = [c for c, _ in pairs]
    found = await conn.fetch(
        CHARGE, *_columns(ordered), [a for _, a in pairs], [c[4] for c in ordered]
    )
    if len(found) == len(ordered):
        return
    present = {tuple(row) for row in found}
    for (budget, member, bucket_ms, unit, _), actual in pairs:
        if (budget, member, unit, bucket_ms) not in present:
            await conn.execute(CHARGE_MISSING, budget, member, unit, bucket_ms, actual)
