"""The behaviour every storage backend must show. Runs once per backend in BACKENDS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from storage_samples import NOW
from test_admin_stores import token

from conftest import opened
from spendgate.clock import ManualClock
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.errors import StorageError
from spendgate.storage import BudgetOverride, GroupBy, Storage, UsageGroup, UsageQuery, open_storage

MakeKey = Callable[..., ApiKey]
MakeRow = Callable[..., LedgerRow]
MS = timedelta(milliseconds=1)
DAY = timedelta(days=1)

# -- keys -------------------------------------------------------------------------------


async def test_key_round_trips_every_field(storage: Storage, make_key: MakeKey) -> None:
    key = make_key(
        1,
        user="ada",
        service="search",
        team="core",
        org="acme",
        tags=("prod", "eu"),
        allowed_models=("gpt-4o*", "claude-*"),
        metadata={"owner": "ada@example.com", "ticket": "FIN-12"},
        expires_at=NOW + DAY,
        revoked_at=NOW + 2 * DAY,
    )
    await storage.insert_key(key)
    assert await storage.key_by_hash(key.key_hash) == key
    assert await storage.key_by_id(key.id) == key


async def test_expiries_stored_in_the_year_10000_still_read(
    persistent_url: str, clock: ManualClock, make_key: MakeKey
) -> None:
    """``9999-12-31T23:59:59-05:00`` is in the year 10000 in UTC: a key, admin token or
    override stored with it (before such expiries were refused) made every read of its row
    overflow `datetime`, so every key listing failed until the row was mended in SQL. Such
    a time now reads as the last one `datetime` holds: never, in effect."""
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    last = datetime.max.replace(tzinfo=UTC)
    async with opened(persistent_url, None, clock) as storage:
        key = make_key(1, expires_at=late)
        await storage.insert_key(key)
        assert [k.expires_at for k in await storage.list_keys()] == [last]
        found = await storage.key_by_hash(key.key_hash)
        assert found is not None
        assert found.expires_at == last
        await storage.set_override(BudgetOverride("b", 5, late, NOW))
        assert [o.expires_at for o in await storage.overrides(NOW)] == [last]
        stored, _ = token()
        await storage.admin.tokens.insert_token(replace(stored, expires_at=late))
        assert [t.expires_at for t in await storage.admin.tokens.list_tokens()] == [last]


async def test_unknown_key_is_none(storage: Storage) -> None:
    assert await storage.key_by_hash("0" * 64) is None
    assert await storage.key_by_id("key_missing") is None


async def test_list_keys_hides_revoked_unless_asked(
    storage: Storage, make_key: MakeKey, clock: ManualClock
) -> None:
    active = make_key(1)
    revoked = make_key(2, revoked_at=clock.now() - MS)
    revoked_now = make_key(3, revoked_at=clock.now())
    revoking_later = make_key(4, revoked_at=clock.now() + DAY)
    expired = make_key(5, expires_at=clock.now() - DAY)
    for key in (expired, revoking_later, revoked_now, revoked, active):
        await storage.insert_key(key)

    assert await storage.list_keys() == [active, revoking_later, expired]
    everything = await storage.list_keys(include_revoked=True)
    assert everything == [active, revoked, revoked_now, revoking_later, expired]


async def test_update_revokes(storage: Storage, make_key: MakeKey, clock: ManualClock) -> None:
    key = make_key(1)
    await storage.insert_key(key)
    await storage.update_key(replace(key, revoked_at=clock.now()))

    found = await storage.key_by_hash(key.key_hash)
    assert found is not None
    assert found.revoked_at == clock.now()
    assert not found.is_active(clock.now())
    assert await storage.list_keys() == []


async def test_a_key_read_before_a_change_reads_as_changed(
    storage: Storage, make_key: MakeKey, clock: ManualClock
) -> None:
    """Lookups on the request path may reuse what they decoded last time (SQLite does,
    while the stored row is the same): a change is seen at the very next lookup."""
    key = make_key(1, team="core", metadata={"owner": "ada"})
    await storage.insert_key(key)
    assert await storage.key_by_hash(key.key_hash) == key
    assert await storage.key_by_hash(key.key_hash) == key
    changed = replace(key, team="search", metadata={"owner": "bob"}, revoked_at=clock.now())
    await storage.update_key(changed)
    assert await storage.key_by_hash(key.key_hash) == changed
    await storage.update_key(key)  # and back: not the first decoding either
    assert await storage.key_by_hash(key.key_hash) == key


async def test_rotate_replaces_the_hash(storage: Storage, make_key: MakeKey) -> None:
    key = make_key(1)
    rotated = replace(key, key_hash="f" * 64, hint="sk-sg-...rotate")
    await storage.insert_key(key)
    await storage.update_key(rotated)

    assert await storage.key_by_hash(key.key_hash) is None
    assert await storage.key_by_hash(rotated.key_hash) == rotated
    assert await storage.key_by_id(key.id) == rotated


async def test_a_rotated_hash_is_remembered_as_retired(
    storage: Storage, make_key: MakeKey, clock: ManualClock
) -> None:
    key = make_key(1)
    await storage.insert_key(key)
    await storage.update_key(replace(key, name="renamed"))  # same hash: nothing retired
    assert await storage.retired_key(key.key_hash) is None
    clock.advance(60)
    rotated = replace(key, key_hash="f" * 64, hint="sk-sg-...rotate")
    await storage.update_key(rotated)
    retired = await storage.retired_key(key.key_hash)
    assert retired is not None
    assert (retired.key_id, retired.retired_at) == (key.id, clock.now().replace(microsecond=0))
    assert await storage.retired_key(rotated.key_hash) is None
    assert await storage.retired_key("0" * 64) is None


async def test_update_of_unknown_key_fails(storage: Storage, make_key: MakeKey) -> None:
    with pytest.raises(StorageError, match="key_0009"):
        await storage.update_key(make_key(9))


async def test_duplicate_key_id_or_hash_fails(storage: Storage, make_key: MakeKey) -> None:
    key = make_key(1)
    await storage.insert_key(key)
    with pytest.raises(StorageError, match="key_0001"):
        await storage.insert_key(replace(key, key_hash="a" * 64))
    with pytest.raises(StorageError, match="key_0002"):
        await storage.insert_key(make_key(2, key_hash=key.key_hash))
    assert await storage.list_keys() == [key]


async def test_rotating_onto_a_taken_hash_fails(storage: Storage, make_key: MakeKey) -> None:
    first, second = make_key(1), make_key(2)
    await storage.insert_key(first)
    await storage.insert_key(second)
    with pytest.raises(StorageError):
        await storage.update_key(replace(second, key_hash=first.key_hash))
    assert await storage.key_by_hash(second.key_hash) == second


# -- ledger -----------------------------------------------------------------------------


async def test_ledger_row_round_trips_exactly(storage: Storage, make_row: MakeRow) -> None:
    full = make_row(
        ts=datetime(2026, 11, 29, 11, 59, 58, 123_000, tzinfo=UTC),
        surface="anthropic.messages",
        tags=("batch", "nightly"),
        input_tokens=12_345,
        cached_input_tokens=2_000,
        cache_write_tokens=1_000,
        output_tokens=678,
        reasoning_tokens=90,
        cost_nanos=987_654_321_012,
        status=499,
        latency_ms=1234.5678,
        ttfb_ms=None,
        streamed=True,
        client_disconnected=True,
        usage_estimated=True,
        upstream_request_id="msg_01XYZ",
        error="client disconnected",
    )
    sparse = make_row(user=None, service=None, team=None, org=None, ts=NOW - MS)
    await storage.record(full)
    await storage.record(sparse)

    assert await storage.ledger(NOW - DAY, NOW + DAY) == [full, sparse]


async def test_ledger_is_oldest_first_and_limited(storage: Storage, make_row: MakeRow) -> None:
    rows = [make_row(ts=NOW + i * MS) for i in range(10)]
    for row in reversed(rows):
        await storage.record(row)

    assert await storage.ledger(NOW, NOW + DAY) == rows
    assert await storage.ledger(NOW, NOW + DAY, limit=3) == rows[:3]


async def test_latest_of_key_is_its_own_newest_first(storage: Storage, make_row: MakeRow) -> None:
    mine = [make_row(ts=NOW + i * MS, key_id="key_mine") for i in range(5)]
    theirs = [make_row(ts=NOW + i * MS, key_id="key_theirs") for i in range(5)]
    refused = make_row(ts=NOW + 9 * MS, key_id="key_mine", blocked_by="ml-daily", status=429)
    for row in [*reversed(mine), *theirs, refused]:
        await storage.record(row)

    assert await storage.latest_of_key("key_mine", 3) == [refused, mine[4], mine[3]]
    assert await storage.latest_of_key("key_mine", 100) == [refused, *reversed(mine)]
    assert await storage.latest_of_key("key_nobody", 5) == []


async def test_ledger_drops_sub_millisecond_digits(storage: Storage, make_row: MakeRow) -> None:
    await storage.record(make_row(ts=NOW + timedelta(microseconds=1_999)))
    [stored] = await storage.ledger(NOW, NOW + DAY)
    assert stored.ts == NOW + MS


async def test_naive_timestamps_are_refused(storage: Storage, make_row: MakeRow) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        await storage.record(make_row(ts=datetime(2026, 11, 29, 12)))


async def test_duplicate_request_id_fails_alone(storage: Storage, make_row: MakeRow) -> None:
    """A second row with a known request_id is a double charge: refused, never merged."""
    first = make_row(cost_nanos=5)
    await storage.record(first)
    twin = replace(first, cost_nanos=999)
    others = [make_row() for _ in range(5)]

    results = await asyncio.gather(
        *(storage.record(row) for row in [others[0], twin, *others[1:]]), return_exceptions=True
    )

    assert [type(r) for r in results] == [type(None), StorageError, *[type(None)] * 4]
    assert first.request_id in str(results[1])
    assert await storage.ledger(NOW - DAY, NOW + DAY) == [first, *others]


async def test_concurrent_records_all_land_once(storage: Storage, make_row: MakeRow) -> None:
    rows = [make_row(ts=NOW + i * MS, cost_nanos=i) for i in range(500)]

    await asyncio.gather(*(storage.record(row) for row in rows))

    assert await storage.ledger(NOW - DAY, NOW + DAY) == rows
    [total] = await storage.usage(UsageQuery(GroupBy.ORG, NOW - DAY, NOW + DAY))
    assert (total.requests, total.cost_nanos) == (500, sum(range(500)))


# -- usage ------------------------------------------------------------------------------

_ATTRIBUTE = {GroupBy.KEY: "key_id", GroupBy.MODEL: "served_model"}


def _expected_usage(rows: list[LedgerRow], group_by: GroupBy) -> list[UsageGroup]:
    attribute = _ATTRIBUTE.get(group_by, group_by.value)
    names = {getattr(row, attribute) for row in rows}
    groups = []
    for name in names:
        mine = [row for row in rows if getattr(row, attribute) == name]
        groups.append(
            UsageGroup(
                group=name,
                requests=len(mine),
                input_tokens=sum(r.input_tokens for r in mine),
                cached_input_tokens=sum(r.cached_input_tokens for r in mine),
                cache_write_tokens=sum(r.cache_write_tokens for r in mine),
                output_tokens=sum(r.output_tokens for r in mine),
                reasoning_tokens=sum(r.reasoning_tokens for r in mine),
                cost_nanos=sum(r.cost_nanos for r in mine),
                errors=sum(r.status >= 400 for r in mine),
                estimated=sum(r.usage_estimated for r in mine),
            )
        )
    return sorted(groups, key=lambda g: -g.cost_nanos)


def _varied_rows(make_row: MakeRow) -> list[LedgerRow]:
    """60 rows spread over every grouping dimension, with distinct totals per group."""
    teams, users = ["core", "ml", None], ["ada", "bob", "cy", "dee"]
    models = [("gpt-4o-mini", "openai"), ("claude-haiku", "anthropic"), ("gpt-4o", "openai")]
    rows = []
    for i in range(60):
        model, provider = models[i % 3]
        rows.append(
            make_row(
                ts=NOW + i * MS,
                key_id=f"key_{i % 5}",
                user=users[i % 4],
                service=f"svc{i % 2}",
                team=teams[i % 3 if i % 7 else 2],
                org="acme" if i % 11 else None,
                served_model=model,
                provider=provider,
                input_tokens=1_000 + i,
                cached_input_tokens=i * 3,
                cache_write_tokens=i % 4,
                output_tokens=10 * i,
                reasoning_tokens=i % 9,
                cost_nanos=1_000_000 * (i + 1) + i * i,
                status=[200, 200, 429, 500, 200][i % 5],
                usage_estimated=i % 6 == 0,
            )
        )
    return rows


@pytest.mark.parametrize("group_by", list(GroupBy))
async def test_usage_sums_exactly(storage: Storage, make_row: MakeRow, group_by: GroupBy) -> None:
    rows = _varied_rows(make_row)
    await asyncio.gather(*(storage.record(row) for row in rows))

    got = await storage.usage(UsageQuery(group_by, NOW, NOW + DAY))

    assert got == _expected_usage(rows, group_by)


async def test_usage_period_is_half_open(storage: Storage, make_row: MakeRow) -> None:
    since, until = NOW, NOW + DAY
    at = {
        "before": since - MS,
        "first": since,
        "last": until - MS,
        "after": until,
    }
    for name, ts in at.items():
        await storage.record(make_row(ts=ts, team=name, cost_nanos=7))

    got = await storage.usage(UsageQuery(GroupBy.TEAM, since, until))

    assert sorted(g.group or "" for g in got) == ["first", "last"]
    inside = await storage.ledger(since, until)
    assert [row.team for row in inside] == ["first", "last"]


async def test_usage_counts_errors_and_estimates(storage: Storage, make_row: MakeRow) -> None:
    statuses = [200, 399, 400, 429, 500, 502, 201]
    for i, status in enumerate(statuses):
        await storage.record(make_row(status=status, usage_estimated=i in (0, 4)))

    [group] = await storage.usage(UsageQuery(GroupBy.TEAM, NOW, NOW + DAY))

    assert (group.requests, group.errors, group.estimated) == (7, 4, 2)


async def test_usage_orders_by_cost_then_name(storage: Storage, make_row: MakeRow) -> None:
    for team, cost in [("b", 5), ("a", 5), ("c", 9), (None, 5)]:
        await storage.record(make_row(team=team, cost_nanos=cost))

    got = await storage.usage(UsageQuery(GroupBy.TEAM, NOW, NOW + DAY))

    assert [g.group for g in got] == ["c", "a", "b", None]


async def test_usage_of_an_empty_period(storage: Storage) -> None:
    assert await storage.usage(UsageQuery(GroupBy.TEAM, NOW, NOW + DAY)) == []
    assert await storage.ledger(NOW, NOW + DAY) == []


# -- lifecycle --------------------------------------------------------------------------


async def test_close_commits_queued_writes(persistent_url: str, make_row: MakeRow) -> None:
    url = persistent_url
    first = open_storage(url)
    await first.open()
    rows = [make_row() for _ in range(50)]
    tasks = [asyncio.create_task(first.record(row)) for row in rows]
    await asyncio.sleep(0)  # every task has queued its row and waits for the commit

    await first.close()

    await asyncio.gather(*tasks)
    second = open_storage(url)
    await second.open()
    try:
        assert await second.ledger(NOW - DAY, NOW + DAY) == rows
    finally:
        await second.close()


async def test_use_after_close_fails(url: str, make_row: MakeRow) -> None:
    backend = open_storage(url)
    await backend.open()
    await backend.close()
    await backend.close()  # closing twice is harmless

    with pytest.raises(StorageError, match="closed"):
        await backend.record(make_row())
    with pytest.raises(StorageError, match="closed"):
        await backend.key_by_hash("0" * 64)
    with pytest.raises(StorageError, match="closed"):
        await backend.usage(UsageQuery(GroupBy.TEAM, NOW, NOW + DAY))


async def test_use_before_open_fails(url: str, make_row: MakeRow) -> None:
    backend = open_storage(url)
    with pytest.raises(StorageError, match="not open"):
        await backend.record(make_row())
