"""Budget counters, reservations and overrides on SQLite: the statements, and the work
each step does on the writer's connection (inside a job: a savepoint of the batch's
transaction, or a transaction of its own when the writer is idle; see the package doc).

Counters are rows of (budget, member, unit, bucket_ms); a window is the sum of its budget
and member's rows with ``bucket_ms >= window.since_ms`` (`spendgate.domain.periods`). A
reservation adds its amount to ``reserved`` on the row of the bucket it was made in, and
settlement (or lapse) takes exactly that amount off the same row again, so ``reserved`` is
always the sum of the live reservations: it cannot leak.

Cost. A write transaction costs little CPU; what it costs is mostly system calls (six
``fcntl`` on the ``-shm`` file, two ``pwrite`` per page written to the WAL at COMMIT, a few
microseconds each on a virtual machine). So each step writes as few pages as the schema
allows and runs as few statements as it can: `reserve_work` reads every counter in one
statement and adds to them in one, then inserts the reservation; settlement deletes the
reservation and charges every counter in one statement. The lapse template leaves out its
blank fields (`spendgate.storage.codec`), so that a reservation fits in its b-tree cell.
Settlement takes what a reservation holds from memory when this process made it
(`spendgate.storage.sqlite.file.Held`), reading it back from the row only otherwise;
whether the row is still there (not lapsed) decides either way.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Sequence
from typing import Any, TypeVar

from spendgate.clock import to_ms
from spendgate.domain.admission import Admitted, CounterState, Refused, decide
from spendgate.domain.budgets import CounterRef
from spendgate.storage.base import BudgetOverride, Lapsed, ReservationPlan, StoredCounter
from spendgate.storage.codec import (
    dump_template,
    dump_worst,
    dumps,
    load_counters,
    load_template,
    load_worst,
)
from spendgate.storage.plans import check_amounts, stored_counters
from spendgate.storage.sqlite.file import HELD_MAX, Held

T = TypeVar("T")

# ---------------------------------------------------------------------------- statements

_PRUNE_COUNTERS = "DELETE FROM budget_counters WHERE budget = ? AND bucket_ms < ? AND reserved = 0"
_PRUNABLE = "SELECT DISTINCT budget FROM budget_counters WHERE bucket_ms < ? AND reserved = 0"
# One row per counter, with its index in the order asked: the window's sums, the budget's
# override in force (NULL: none) and the oldest bucket in use. One statement for all the
# counters of a reservation (UNION ALL of one indexed lookup each): a statement costs more
# than a lookup.
_STATE_PART = """
SELECT {index}, COALESCE(SUM(spent), 0), COALESCE(SUM(reserved), 0), (
    SELECT limit_amount FROM budget_overrides
    WHERE budget = ?{budget} AND (expires_ms IS NULL OR expires_ms > ?{now})
    ORDER BY created_ms DESC, id DESC LIMIT 1
), MIN(CASE WHEN spent > 0 OR reserved > 0 THEN bucket_ms END)
FROM budget_counters
WHERE budget = ?{budget} AND member = ?{member} AND unit = ?{unit} AND bucket_ms >= ?{since}
"""
STATEMENT_COUNTERS = 64  # counters per statement (SQLite allows 500 terms in a compound)


@functools.cache
def _counter_states_sql(count: int) -> str:
    """Parameters: (budget, member, unit, since_ms) per counter, then now_ms."""
    now = 4 * count + 1
    return "UNION ALL".join(
        _STATE_PART.format(
            index=i, budget=4 * i + 1, member=4 * i + 2, unit=4 * i + 3, since=4 * i + 4, now=now
        )
        for i in range(count)
    )


@functools.cache
def _add_reserved_sql(count: int) -> str:
    """Parameters: (budget, member, unit, bucket_ms, amount) per counter."""
    rows = ", ".join(["(?, ?, ?, ?, 0, ?)"] * count)
    return (
        "INSERT INTO budget_counters (budget, member, unit, bucket_ms, spent, reserved) "  # noqa: S608
        f"VALUES {rows} ON CONFLICT (budget, member, unit, bucket_ms) "
        "DO UPDATE SET reserved = reserved + excluded.reserved"
    )


@functools.cache
def _settle_counters_sql(count: int) -> str:
    """Charge ``spent`` and release ``reserved`` on each counter's row (created, with
    nothing reserved, if it went missing). Parameters: (budget, member, unit, bucket_ms,
    spent) per counter, then the amount to release from each, in the same order."""
    rows = ", ".join(["(?, ?, ?, ?, ?, 0)"] * count)
    release = "".join(
        f"WHEN excluded.budget = ?{5 * i + 1} AND excluded.member = ?{5 * i + 2} "
        f"AND excluded.bucket_ms = ?{5 * i + 4} THEN ?{5 * count + i + 1} "
        for i in range(count)
    )
    return (
        "INSERT INTO budget_counters (budget, member, unit, bucket_ms, spent, reserved) "  # noqa: S608
        f"VALUES {rows} ON CONFLICT (budget, member, unit, bucket_ms) "
        f"DO UPDATE SET spent = spent + excluded.spent, reserved = reserved - CASE {release}END"
    )


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
RENEW = (
    "UPDATE reservations SET expires_ms = MAX(expires_ms, ?) WHERE owner = ? "
    "AND id NOT IN (SELECT value FROM json_each(?))"
)
ACTIVE_MEMBERS = """
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
CLEAR_OVERRIDES = "DELETE FROM budget_overrides WHERE budget = ?"
OVERRIDES = """
SELECT budget, limit_amount, expires_ms, created_ms FROM budget_overrides AS o
WHERE id = (
    SELECT id FROM budget_overrides AS i
    WHERE i.budget = o.budget AND (i.expires_ms IS NULL OR i.expires_ms > ?1)
    ORDER BY created_ms DESC, id DESC LIMIT 1
)
ORDER BY budget
"""
RESET_ALL = "UPDATE budget_counters SET spent = 0 WHERE budget = ? AND bucket_ms >= ?"
RESET_MEMBER = (
    "UPDATE budget_counters SET spent = 0 WHERE budget = ? AND member = ? AND bucket_ms >= ?"
)


# ---------------------------------------------------------------------------- work


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    if len(items) <= STATEMENT_COUNTERS:
        return [items]
    return [items[i : i + STATEMENT_COUNTERS] for i in range(0, len(items), STATEMENT_COUNTERS)]


def read_states(
    conn: sqlite3.Connection, refs: Sequence[CounterRef], now_ms: int
) -> list[CounterState]:
    """Every counter's state in the order of ``refs``, one statement per 64 counters."""
    states: list[CounterState] = []
    for chunk in _chunks(refs) if refs else ():
        params: list[Any] = []
        for ref in chunk:
            budget = ref.budget
            # ``_value_``, not ``value``: Enum's ``value`` is a Python-level descriptor
            params += (budget.name, ref.member, budget.unit._value_, ref.window.since_ms)
        params.append(now_ms)
        rows = conn.execute(_counter_states_sql(len(chunk)), params).fetchall()
        rows.sort()  # by index (UNION ALL returns them in order, but says nothing of it)
        for ref, (_, spent, reserved, override, oldest) in zip(chunk, rows, strict=True):
            limit = ref.budget.limit if override is None else override
            states.append(CounterState(ref, limit, spent, reserved, oldest))
    return states


def reserve_work(
    plan: ReservationPlan, now_ms: int, held: Held, conn: sqlite3.Connection
) -> Admitted | Refused:
    decision = decide(
        plan.worst, read_states(conn, plan.counters, now_ms), plan.caps, plan.min_output
    )
    if isinstance(decision, Refused):
        return decision
    stored = stored_counters(plan, decision.amounts)
    for chunk in _chunks(stored) if stored else ():
        params: list[Any] = []
        for name, member, bucket_ms, unit, amount in chunk:
            params += (name, member, unit, bucket_ms, amount)
        conn.execute(_add_reserved_sql(len(chunk)), params)
    conn.execute(
        _INSERT_RESERVATION,
        (
            plan.reservation_id,
            plan.owner,
            to_ms(plan.expires_at),
            now_ms,
            dumps(stored),
            decision.ceiling,
            dump_worst(plan.worst),
            dump_template(plan.template),
        ),
    )
    if len(held) >= HELD_MAX:
        held.clear()
    held[plan.reservation_id] = stored
    return decision


def charge(
    conn: sqlite3.Connection, counters: Sequence[StoredCounter], actuals: Sequence[int]
) -> None:
    """Release what each counter reserved and charge it ``actual``, one statement per 64
    counters (a reservation never names a counter twice: `check_plan`)."""
    for chunk in _chunks(range(len(counters))):
        params: list[Any] = []
        releases: list[int] = []
        for i in chunk:
            budget, member, bucket_ms, unit, reserved = counters[i]
            params += (budget, member, unit, bucket_ms, actuals[i])
            releases.append(reserved)
        conn.execute(_settle_counters_sql(len(chunk)), params + releases)


def holding(
    conn: sqlite3.Connection, reservation_id: str, held: Held
) -> tuple[StoredCounter, ...] | None:
    """What a live reservation holds (from memory when this process made it)."""
    found = conn.execute(_RESERVATION_COUNTERS, (reservation_id,)).fetchone()
    if found is None:
        held.pop(reservation_id, None)
        return None
    counters = held.get(reservation_id)
    return counters if counters is not None else load_counters(found[0])


def claim(
    conn: sqlite3.Connection, reservation_id: str, held: Held, amounts: Sequence[int] | None
) -> tuple[StoredCounter, ...] | None:
    """Delete a live reservation (after checking ``amounts`` fit it); what it held, or None
    (and nothing changed) if it is gone. (``DELETE ... RETURNING`` is one statement, but
    slower than a SELECT and a DELETE.)"""
    counters = held.pop(reservation_id, None)
    if counters is None:
        found = conn.execute(_RESERVATION_COUNTERS, (reservation_id,)).fetchone()
        if found is None:
            return None
        counters = load_counters(found[0])
    if amounts is not None:
        check_amounts(reservation_id, counters, amounts)
    if not conn.execute(_DELETE_RESERVATION, (reservation_id,)).rowcount:
        return None
    return counters


def take(
    conn: sqlite3.Connection, reservation_id: str, held: Held, amounts: Sequence[int] | None
) -> tuple[StoredCounter, ...] | None:
    """End a live reservation, charging ``amounts`` (None: nothing, a release)."""
    counters = claim(conn, reservation_id, held, amounts)
    if counters:
        charge(conn, counters, [0] * len(counters) if amounts is None else amounts)
    return counters


def lapsed(conn: sqlite3.Connection, now_ms: int, limit: int) -> list[Lapsed]:
    return [
        Lapsed(
            reservation_id,
            load_counters(counters),
            ceiling,
            load_worst(worst),
            load_template(template),
        )
        for reservation_id, counters, ceiling, worst, template in conn.execute(
            _LAPSED, (now_ms, limit)
        )
    ]


def set_override_work(override: BudgetOverride, conn: sqlite3.Connection) -> None:
    created_ms = to_ms(override.created_at)
    expires_ms = None if override.expires_at is None else to_ms(override.expires_at)
    conn.execute(_PRUNE_OVERRIDES, (override.budget, expires_ms is None, created_ms))
    conn.execute(_INSERT_OVERRIDE, (override.budget, override.limit, expires_ms, created_ms))


def rowcount(sql: str, params: Sequence[Any], conn: sqlite3.Connection) -> int:
    return conn.execute(sql, params).rowcount


def prune_work(keep_from_ms: dict[str, int], conn: sqlite3.Connection) -> int:
    """Only the budgets that hold a counter older than the latest window start can have
    one to prune: one scan of the counters finds them, then one statement each, instead
    of one statement per budget on every lease tick (a config may list 100,000)."""
    if not keep_from_ms:
        return 0
    latest = max(keep_from_ms.values())
    found = [budget for (budget,) in conn.execute(_PRUNABLE, (latest,))]
    return sum(
        conn.execute(_PRUNE_COUNTERS, (budget, keep_from_ms[budget])).rowcount
        for budget in found
        if budget in keep_from_ms
    )


def read_snapshot(
    refs: tuple[CounterRef, ...], now_ms: int, conn: sqlite3.Connection
) -> list[CounterState]:
    """Every counter read in one snapshot: one statement is one (up to 64 counters, the
    request path's case: no ``BEGIN`` and ``COMMIT`` around it), more take a transaction."""
    if len(refs) <= STATEMENT_COUNTERS:
        return read_states(conn, refs, now_ms)
    conn.execute("BEGIN")
    try:
        return read_states(conn, refs, now_ms)
    finally:
        conn.execute("COMMIT")
