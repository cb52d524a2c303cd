"""Budget storage behaviour, on every backend (`conftest.BACKENDS`): reservations,
settlement, leases, overrides and resets. What only SQLite has (its writer, its file, two
processes on one file) is in ``test_sqlite_budgets.py``."""

from __future__ import annotations

import asyncio
from dataclasses import fields, replace
from datetime import UTC, datetime, timedelta
from functools import partial

import orjson
import pytest
from budget_samples import (
    FULL,
    FULL_TOKENS,
    LEASE,
    UTC_CALENDAR,
    WORST,
    budget,
    ledger,
    one,
    plan,
    ref,
    settled,
)
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock, to_ms
from spendgate.config.schema import BudgetScope
from spendgate.domain.admission import Admitted, CounterState, Refused
from spendgate.domain.budgets import Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, window
from spendgate.errors import StorageError
from spendgate.storage import BudgetOverride, Storage
from spendgate.storage.codec import dump_template, load_template


async def test_reserve_then_settle_moves_reserved_to_spent(storage: Storage) -> None:
    team, org = ref(budget("team"), NOW), ref(budget("org", unit=Unit.TOKENS, limit=10**6), NOW)
    reservation = plan([team, org], NOW)

    decision = await storage.reserve(reservation)
    assert decision == Admitted(
        ceiling=1_000,
        clamped=False,
        amounts=(FULL, FULL_TOKENS),
        tightest=CounterState(team, 100 * FULL, 0, 0),  # affords 124_750 tokens, org 998_000
    )
    assert await storage.counter_states((team, org), NOW) == [
        CounterState(team, 100 * FULL, 0, FULL),
        CounterState(org, 10**6, 0, FULL_TOKENS),
    ]

    row = settled(reservation, 1_800_000, output_ceiling=1_000, clamped_from=None)
    assert await storage.settle(reservation.reservation_id, (1_800_000, 1_200), row) is True
    assert await storage.counter_states((team, org), NOW) == [
        CounterState(team, 100 * FULL, 1_800_000, 0),
        CounterState(org, 10**6, 1_200, 0),
    ]
    assert await ledger(storage) == [row]


async def test_refused_writes_nothing(storage: Storage) -> None:
    team = ref(budget("team", limit=FULL - 1), NOW)
    reservation = plan([team], NOW, min_output=1_000)

    decision = await storage.reserve(reservation)
    assert isinstance(decision, Refused)
    assert decision.counter == CounterState(team, FULL - 1, 0, 0)
    assert decision.needed == FULL
    assert await one(storage, team, NOW) == CounterState(team, FULL - 1, 0, 0)
    assert await storage.settle(reservation.reservation_id, (0,), settled(reservation, 0)) is False
    assert await ledger(storage) == []


async def test_clamped_reservation_reserves_the_clamped_amount(storage: Storage) -> None:
    team = ref(budget("team", limit=1_000_000 + 400 * 4_000), NOW)
    decision = await storage.reserve(plan([team], NOW))
    assert isinstance(decision, Admitted)
    assert (decision.ceiling, decision.clamped) == (400, True)
    assert await one(storage, team, NOW) == CounterState(team, 2_600_000, 0, 2_600_000)
    refused = await storage.reserve(plan([team], NOW, min_output=1))
    assert isinstance(refused, Refused)


async def test_settle_is_idempotent(storage: Storage) -> None:
    team = ref(budget("team"), NOW)
    reservation = plan([team], NOW)
    await storage.reserve(reservation)
    row = settled(reservation, 3_000_000)
    assert await storage.settle(reservation.reservation_id, (3_000_000,), row)

    again = replace(row, cost_nanos=9_999_999)
    assert await storage.settle(reservation.reservation_id, (9_999_999,), again) is False
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 3_000_000, 0)
    assert await ledger(storage) == [row]


async def test_cancel_releases_everything(storage: Storage) -> None:
    team = ref(budget("team"), NOW)
    reservation = plan([team], NOW)
    await storage.reserve(reservation)
    row = settled(reservation, 0, status=502, output_tokens=0, error="upstream refused")
    assert await storage.settle(reservation.reservation_id, (0,), row)
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 0, 0)
    assert [r.error for r in await ledger(storage)] == ["upstream refused"]


async def test_settle_refuses_negative_or_misaligned_amounts(storage: Storage) -> None:
    team = ref(budget("team"), NOW)
    reservation = plan([team], NOW)
    await storage.reserve(reservation)
    with pytest.raises(ValueError, match="negative"):
        await storage.settle(reservation.reservation_id, (-1,), settled(reservation, 0))
    with pytest.raises(StorageError, match="2 amounts"):
        await storage.settle(reservation.reservation_id, (1, 2), settled(reservation, 0))
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 0, FULL)
    assert await ledger(storage) == []


async def test_a_counter_named_twice_is_refused(storage: Storage) -> None:
    team = ref(budget("team"), NOW)
    with pytest.raises(ValueError, match="twice"):
        await storage.reserve(plan([team, team], NOW))


async def test_duplicate_reservation_id_fails_and_reserves_nothing(storage: Storage) -> None:
    team = ref(budget("team"), NOW)
    first = plan([team], NOW)
    await storage.reserve(first)
    with pytest.raises(StorageError):
        await storage.reserve(replace(first, counters=(team,)))
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 0, FULL)


async def test_a_released_reservation_id_may_be_reserved_again(storage: Storage) -> None:
    """A large body's bound is given back before its exact count is reserved under the same
    id (`spendgate.pipeline.bound_first`): the second reservation is a reservation like
    any other, settled once, with nothing of the first left held."""
    team = ref(budget("team"), NOW)
    bound = plan([team], NOW, worst=replace(WORST, input_cost=WORST.input_cost * 4))
    first = await storage.reserve(bound)
    assert isinstance(first, Admitted)
    assert await storage.release(bound.reservation_id)
    exact = plan([team], NOW, request_id=bound.reservation_id)
    second = await storage.reserve(exact)
    assert isinstance(second, Admitted)
    assert second.amounts[0] < first.amounts[0]
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 0, second.amounts[0])
    row = settled(exact, 3_000_000)
    assert await storage.settle(exact.reservation_id, (3_000_000,), row)
    assert await storage.settle(exact.reservation_id, (3_000_000,), row) is False
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 3_000_000, 0)
    assert await ledger(storage) == [row]


async def test_ledger_keeps_the_admission_fields(storage: Storage) -> None:
    row = build_row(output_ceiling=512, clamped_from=32_000, unreconciled=True)
    await storage.record(row)
    assert await ledger(storage) == [row]


async def test_a_lapsed_lease_is_charged_at_its_reservation(
    storage: Storage, clock: ManualClock
) -> None:
    team = ref(budget("team"), NOW)
    tokens = ref(budget("tok", unit=Unit.TOKENS, limit=10**6), NOW)
    reservation = plan([team, tokens], NOW, worst=replace(WORST, choices=2))
    decision = await storage.reserve(reservation)
    assert isinstance(decision, Admitted)

    assert await storage.expire_leases(NOW + LEASE) == 0  # not before it expires
    clock.advance(LEASE.total_seconds() + 1)
    assert await storage.expire_leases(clock.now()) == 1
    assert await storage.expire_leases(clock.now()) == 0

    worst_nanos = 1_000_000 + 2 * 1_000 * 4_000
    assert await storage.counter_states((team, tokens), clock.now()) == [
        CounterState(team, 100 * FULL, worst_nanos, 0),
        CounterState(tokens, 10**6, 1_000 + 2_000, 0),
    ]
    (row,) = await ledger(storage)
    assert row == replace(
        reservation.template,
        input_tokens=1_000,
        output_tokens=2_000,
        cost_nanos=worst_nanos,
        usage_estimated=True,
        unreconciled=True,
        output_ceiling=1_000,
        error="gateway stopped before the request settled; charged at its reservation",
    )
    # The gateway that held it comes back too late: nothing more is charged or written.
    late = settled(reservation, 1)
    assert await storage.settle(reservation.reservation_id, (1, 1), late) is False
    assert len(await ledger(storage)) == 1


async def test_renewed_leases_do_not_lapse(storage: Storage, clock: ManualClock) -> None:
    team = ref(budget("team"), NOW)
    mine = [plan([team], NOW, owner="gw-1") for _ in range(3)]
    theirs = plan([team], NOW, owner="gw-2")
    for reservation in [*mine, theirs]:
        await storage.reserve(reservation)

    clock.advance(20)
    assert await storage.renew_leases("gw-1", clock.now() + LEASE) == 3
    assert await storage.renew_leases("gw-1", clock.now()) == 3  # never shortens
    clock.advance(20)
    assert await storage.expire_leases(clock.now()) == 1  # gw-2 died
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, FULL, 3 * FULL)
    clock.advance(40)
    assert await storage.expire_leases(clock.now()) == 3
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 4 * FULL, 0)


async def test_expiry_settles_more_than_one_batch(storage: Storage, clock: ManualClock) -> None:
    team = ref(budget("team", limit=10**12), NOW)
    await asyncio.gather(*(storage.reserve(plan([team], NOW)) for _ in range(600)))
    clock.advance(60)
    assert await storage.expire_leases(clock.now()) == 600
    assert await one(storage, team, NOW) == CounterState(team, 10**12, 600 * FULL, 0)
    assert sum(r.unreconciled for r in await ledger(storage)) == 600


async def test_a_lapse_whose_row_exists_still_releases(
    storage: Storage, clock: ManualClock
) -> None:
    team = ref(budget("team"), NOW)
    reservation = plan([team], NOW)
    await storage.reserve(reservation)
    await storage.record(build_row(request_id=reservation.reservation_id, cost_nanos=7))
    clock.advance(60)
    assert await storage.expire_leases(clock.now()) == 1
    # The row in force decides the charge (the counters agree with the ledger): what
    # settlement's ledger half wrote before its process died, not the worst case.
    assert await one(storage, team, NOW) == CounterState(team, 100 * FULL, 7, 0)
    assert [r.cost_nanos for r in await ledger(storage)] == [7]


async def test_overrides_expire_back_to_the_configured_limit(
    storage: Storage, clock: ManualClock
) -> None:
    spec = budget("team", limit=2 * FULL)
    team = ref(spec, NOW)
    for _ in range(2):
        assert isinstance(await storage.reserve(plan([team], NOW, min_output=1_000)), Admitted)
    assert isinstance(await storage.reserve(plan([team], NOW, min_output=1_000)), Refused)

    raised = BudgetOverride("team", 4 * FULL, expires_at=NOW + timedelta(hours=1), created_at=NOW)
    await storage.set_override(raised)
    assert await storage.overrides(NOW) == [raised]
    assert (await one(storage, team, NOW)).limit == 4 * FULL
    assert isinstance(await storage.reserve(plan([team], NOW, min_output=1_000)), Admitted)

    clock.advance(3600)
    later = ref(spec, clock.now())
    assert await storage.overrides(clock.now()) == []
    assert await one(storage, later, clock.now()) == CounterState(later, 2 * FULL, 0, 3 * FULL)
    assert isinstance(await storage.reserve(plan([later], clock.now(), min_output=1)), Refused)


async def test_the_latest_override_in_force_wins(storage: Storage, clock: ManualClock) -> None:
    team = ref(budget("team"), NOW)
    permanent = BudgetOverride("team", 7, expires_at=None, created_at=NOW)
    await storage.set_override(permanent)
    clock.advance(10)
    temporary = BudgetOverride(
        "team", 9, expires_at=clock.now() + timedelta(minutes=5), created_at=clock.now()
    )
    await storage.set_override(temporary)
    other = BudgetOverride("org", 1, expires_at=None, created_at=clock.now())
    await storage.set_override(other)

    assert await storage.overrides(clock.now()) == [other, temporary]
    assert (await one(storage, team, clock.now())).limit == 9
    clock.advance(300)  # the temporary one ends: the permanent one is back
    assert await storage.overrides(clock.now()) == [other, permanent]
    assert (await one(storage, team, clock.now())).limit == 7

    newer = BudgetOverride("team", 11, expires_at=None, created_at=clock.now())
    await storage.set_override(newer)
    assert (await one(storage, team, clock.now())).limit == 11
    assert await storage.clear_overrides("team") == 1  # the older ones were superseded
    assert (await one(storage, team, clock.now())).limit == 100 * FULL
    assert await storage.overrides(clock.now()) == [other]


async def test_reset_forgives_spend_but_keeps_reservations(storage: Storage) -> None:
    spec = budget("team", period="rolling:1h")
    members = {m: ref(spec, NOW, member=m) for m in ("ml", "infra")}
    other = ref(budget("org"), NOW)
    for counter in members.values():
        done = plan([counter, other], NOW)
        await storage.reserve(done)
        await storage.settle(done.reservation_id, (FULL, FULL), settled(done, FULL))
        await storage.reserve(plan([counter], NOW))

    assert await storage.reset_budget("team", "ml", members["ml"].window.since_ms) == 1
    assert await one(storage, members["ml"], NOW) == CounterState(
        members["ml"], 100 * FULL, 0, FULL
    )
    assert (await one(storage, members["infra"], NOW)).spent == FULL
    assert await storage.reset_budget("team", None, members["ml"].window.since_ms) == 2
    assert (await one(storage, members["infra"], NOW)).spent == 0
    assert (await one(storage, other, NOW)).spent == 2 * FULL  # another budget: untouched
    assert len(await ledger(storage)) == 2  # history stays


async def test_reset_leaves_older_windows_alone(storage: Storage) -> None:
    spec = budget("team", period="daily")
    yesterday = NOW - timedelta(days=1)
    old, new = ref(spec, yesterday), ref(spec, NOW)
    for counter, at in ((old, yesterday), (new, NOW)):
        done = plan([counter], at)
        await storage.reserve(done)
        await storage.settle(done.reservation_id, (FULL,), settled(done, FULL))
    assert await storage.reset_budget("team", None, new.window.since_ms) == 1
    assert (await one(storage, old, yesterday)).spent == FULL
    assert (await one(storage, new, NOW)).spent == 0


async def test_active_members_lists_members_of_the_window(storage: Storage) -> None:
    spec = budget("team", period="daily")
    yesterday = NOW - timedelta(days=1)
    await storage.reserve(plan([ref(spec, yesterday, member="old")], yesterday))
    for member in ("b", "a", "b2"):
        await storage.reserve(plan([ref(spec, NOW, member=member)], NOW))
    await storage.reserve(plan([ref(budget("org"), NOW, member="zzz")], NOW))
    since = window(spec.period, NOW, UTC_CALENDAR).since_ms
    assert await storage.active_members("team", since) == ["a", "b", "b2"]
    assert await storage.active_members("team", 0) == ["a", "b", "b2", "old"]


async def test_the_monthly_reset_in_berlin_gives_a_fresh_counter(
    storage: Storage, clock: ManualClock
) -> None:
    berlin = Calendar.of("Europe/Berlin")
    spec = budget("team", limit=2 * FULL)
    clock.set(datetime(2026, 3, 31, 21, 59, tzinfo=UTC))  # 23:59 on March 31 in Berlin
    march = ref(spec, clock.now(), calendar=berlin)
    first = plan([march], clock.now(), min_output=1_000)
    for reservation in (first, plan([march], clock.now(), min_output=1_000)):
        assert isinstance(await storage.reserve(reservation), Admitted)
    assert isinstance(await storage.reserve(plan([march], clock.now(), min_output=1)), Refused)
    assert march.window.resets_at == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)

    clock.advance(60)  # April 1, 00:00 Berlin (still March 31 in UTC)
    april = ref(spec, clock.now(), calendar=berlin)
    assert april.window.since_ms > march.window.since_ms
    assert await one(storage, april, clock.now()) == CounterState(april, 2 * FULL, 0, 0)
    assert isinstance(await storage.reserve(plan([april], clock.now())), Admitted)
    # A March reservation settling in April lands on March's counter, not on April's.
    assert await storage.settle(first.reservation_id, (FULL,), settled(first, FULL))
    assert await one(storage, april, clock.now()) == CounterState(april, 2 * FULL, 0, FULL)


async def test_a_switched_unit_starts_a_fresh_counter(storage: Storage) -> None:
    dollars = ref(budget("team", limit=FULL), NOW)
    await storage.reserve(plan([dollars], NOW))
    tokens = ref(budget("team", unit=Unit.TOKENS, limit=FULL_TOKENS), NOW)
    assert await one(storage, tokens, NOW) == CounterState(tokens, FULL_TOKENS, 0, 0)
    assert isinstance(await storage.reserve(plan([tokens], NOW)), Admitted)


async def test_concurrent_reserves_admit_exactly_what_fits(storage: Storage) -> None:
    team = ref(budget("team", limit=10 * FULL + FULL // 2), NOW)  # worth 10.5 requests
    plans = [plan([team], NOW, min_output=1_000) for _ in range(200)]
    decisions = await asyncio.gather(*(storage.reserve(p) for p in plans))

    admitted = [d for d in decisions if isinstance(d, Admitted)]
    assert len(admitted) == 10
    state = await one(storage, team, NOW)
    assert state.reserved == 10 * FULL <= state.limit
    refusals = [d for d in decisions if isinstance(d, Refused)]
    assert all(r.counter is not None and r.counter.ref == team for r in refusals)


async def test_concurrent_nested_budgets_never_overshoot(storage: Storage, backend: str) -> None:
    """Key within team within org: a different budget is the tightest for each group of
    callers, the last request before each runs out is clamped, and after the burst no
    group can afford even the minimum (nothing fits that was refused)."""
    org = ref(budget("org", limit=20 * FULL + FULL // 2, scope=BudgetScope.ORG), NOW, "acme")
    core = ref(budget("team-core", limit=6 * FULL + FULL // 2), NOW, "core")
    big = ref(budget("team-big", limit=10**6 * FULL), NOW, "big")
    tokens = partial(budget, unit=Unit.TOKENS, scope=BudgetScope.KEY)
    key0 = ref(tokens("key-k0", limit=2 * FULL_TOKENS + 1_500), NOW, "k0")
    key1 = ref(tokens("key-k1", limit=10**9), NOW, "k1")
    key2 = ref(tokens("key-k2", limit=10**9), NOW, "k2")
    groups = [(key0, core, org), (key1, core, org), (key2, big, org)]

    plans = [plan(groups[i % 3], NOW) for i in range(300)]
    decisions = await asyncio.gather(*(storage.reserve(p) for p in plans))

    admitted = [(p, d) for p, d in zip(plans, decisions, strict=True) if isinstance(d, Admitted)]
    assert any(d.clamped for _, d in admitted)
    tightest = {d.tightest.ref.budget.name for _, d in admitted if d.tightest is not None}
    blockers = {
        d.counter.ref.budget.name for d in decisions if isinstance(d, Refused) and d.counter
    }
    if backend == "postgres":
        # One process's reservations reach PostgreSQL over a pool of connections, in no
        # set order: whether key k0 or team core runs out first depends on it.
        assert {"team-core", "org"} <= tightest <= {"key-k0", "team-core", "org"}
        assert {"team-core", "org"} <= blockers <= {"key-k0", "team-core", "org"}
    else:  # in the order asked
        assert tightest == {"key-k0", "team-core", "org"}
        assert blockers == {"key-k0", "team-core", "org"}
    counters = (org, core, big, key0, key1, key2)
    states = await storage.counter_states(counters, NOW)
    for state in states:
        assert state.spent + state.reserved <= state.limit
    assert states[0].reserved == sum(d.amounts[2] for _, d in admitted)
    for group in groups:  # what was refused could not have fitted
        assert isinstance(await storage.reserve(plan(group, NOW)), Refused)

    for p, d in admitted:  # everything settles at its reservation; nothing leaks
        await storage.settle(p.reservation_id, d.amounts, settled(p, d.amounts[2]))
    assert all(s.reserved == 0 for s in await storage.counter_states(counters, NOW))


async def test_many_counters_span_several_statements(storage: Storage) -> None:
    """Counters are read and written in statements of 64: 70 take two of each."""
    refs = [ref(budget(f"b{i:02d}"), NOW) for i in range(70)]
    reservation = plan(refs, NOW)
    decision = await storage.reserve(reservation)
    assert isinstance(decision, Admitted)
    states = await storage.counter_states(tuple(refs), NOW)
    assert [state.ref for state in states] == refs
    assert {(state.spent, state.reserved) for state in states} == {(0, FULL)}
    amounts = tuple(range(70))
    assert await storage.settle(reservation.reservation_id, amounts, settled(reservation, 70))
    states = await storage.counter_states(tuple(refs), NOW)
    assert [(state.spent, state.reserved) for state in states] == [(i, 0) for i in range(70)]


def test_the_template_round_trips_and_old_templates_still_load() -> None:
    full = build_row(
        request_id="req_1",
        tags=("a", "b"),
        streamed=True,
        session_id="s-1",
        retry_count=2,
        shadow_blocks=("x",),
        ttfb_ms=None,
        cost_nanos=0,
    )
    text = dump_template(full)
    assert '"cost_nanos"' not in text  # a blank is left out...
    assert load_template(text) == full  # ...and comes back
    blank = build_row(request_id="req_2", user=None, service=None, team=None, org=None)
    assert load_template(dump_template(blank)) == blank
    # A template written whole, by field name, before blanks were left out.
    old = {field.name: getattr(full, field.name) for field in fields(LedgerRow)}
    old.update(ts=to_ms(full.ts), tags=list(full.tags), shadow_blocks=list(full.shadow_blocks))
    assert load_template(orjson.dumps(old).decode()) == full
    paid = build_row(request_id="req_3", tool_calls=(("web_search", 2),))
    assert load_template(dump_template(paid)) == paid  # the pairs come back as tuples


async def test_pruning_drops_the_old_settled_counters_of_the_budgets_named(
    storage: Storage,
) -> None:
    """One lease tick names every listed budget (a config may list 100,000): counters older
    than their budget's window go, those of budgets not named and those in use stay."""
    old = NOW - timedelta(days=40)
    refs = {
        (name, when): ref(budget(name), when) for name in ("team", "org") for when in (old, NOW)
    }
    for (_, when), counter in refs.items():
        reservation = plan([counter], when)
        assert isinstance(await storage.reserve(reservation), Admitted)
        row = settled(reservation, 1_000, output_ceiling=1_000, clamped_from=None)
        assert await storage.settle(reservation.reservation_id, (1_000,), row) is True
    since = to_ms(refs["team", NOW].window.since)  # this month's bucket is kept
    keep = {f"listed-{i}": since for i in range(2_000)} | {"team": since}
    assert await storage.prune_counters(keep) >= 1  # its rows in the old window
    assert await storage.prune_counters(keep) == 0
    spent = {key: (await one(storage, counter, key[1])).spent for key, counter in refs.items()}
    # read from last month's window: both buckets, unless last month's was pruned
    assert spent == {
        ("team", old): 1_000,
        ("team", NOW): 1_000,
        ("org", old): 2_000,
        ("org", NOW): 1_000,
    }
