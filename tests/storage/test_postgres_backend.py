"""What only the PostgreSQL backend has: migrations recorded and applied once under a
lock, rows inserted in idempotent batches, monthly ledger partitions with retention, and
budgets exact between gateway processes sharing one database."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from budget_samples import FULL, LEASE, budget, one, plan, ref
from pg_databases import throwaway_database
from storage_child import FITS, RESERVATIONS
from storage_samples import NOW, build_row

from spendgate.clock import ManualClock
from spendgate.config.storage import StorageConfig
from spendgate.domain.admission import Admitted
from spendgate.errors import StorageError
from spendgate.storage import Storage, open_storage
from spendgate.storage.postgres import PostgresSettings, PostgresStorage, database
from spendgate.storage.postgres.migrate import load_migrations

CHILD = Path(__file__).with_name("storage_child.py")
DAY = timedelta(days=1)


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(NOW)


@pytest.fixture
async def pg(pg_url: str, clock: ManualClock) -> AsyncIterator[Storage]:
    store = open_storage(pg_url, clock=clock)
    await store.open()
    yield store
    await store.close()


async def fetch(url: str, sql: str) -> list[tuple[object, ...]]:
    conn = await asyncpg.connect(url)
    try:
        return [tuple(row) for row in await conn.fetch(sql)]
    finally:
        await conn.close()


async def partitions_of(url: str) -> list[str]:
    rows = await fetch(
        url,
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'ledger'::regclass ORDER BY 1",
    )
    return [str(row[0]) for row in rows]


# -- migrations -------------------------------------------------------------------------


async def test_migrations_are_recorded_in_order_and_applied_once(pg_url: str) -> None:
    shipped = load_migrations()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    for _ in range(2):  # a second open finds everything recorded and applies nothing
        store = open_storage(pg_url)
        await store.open()
        await store.close()
    recorded = await fetch(pg_url, "SELECT version, name FROM schema_migrations ORDER BY 1")
    assert recorded == [(m.version, m.name) for m in shipped]


def test_gateways_opening_a_fresh_database_at_once_migrate_it_once(pg_url: str) -> None:
    start_at = time.time() + 2.0
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "open", pg_url, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [child.communicate(timeout=60) for child in children]
    assert [child.returncode for child in children] == [0] * 4, outputs
    recorded = asyncio.run(fetch(pg_url, "SELECT version FROM schema_migrations"))
    assert sorted(row[0] for row in recorded) == [m.version for m in load_migrations()]


# -- batches ----------------------------------------------------------------------------


async def test_a_batch_is_idempotent_by_request_id(pg: Storage) -> None:
    rows = [build_row(ts=NOW + i * timedelta(milliseconds=1), cost_nanos=i) for i in range(1_500)]
    twin = replace(rows[3], cost_nanos=999)  # same request, other content: the first stays

    assert await pg.ledger_store.append(rows[:1_000]) == [True] * 1_000
    again = await pg.ledger_store.append([*rows[500:], twin, rows[1_200]])
    assert again == [False] * 500 + [True] * 500 + [False, False]

    stored = await pg.ledger(NOW - DAY, NOW + DAY)
    assert stored == rows
    assert await pg.ledger_store.row(rows[3].request_id) == rows[3]


async def test_concurrent_batches_from_two_gateways_land_each_row_once(
    pg_url: str, clock: ManualClock
) -> None:
    rows = [build_row(ts=NOW + i * timedelta(milliseconds=1), cost_nanos=i) for i in range(600)]
    first, second = open_storage(pg_url, clock=clock), open_storage(pg_url, clock=clock)
    await first.open()
    await second.open()
    try:
        chunks = [rows[i : i + 50] for i in range(0, 600, 50)]
        results = await asyncio.gather(
            *(store.ledger_store.append(chunk) for chunk in chunks for store in (first, second))
        )
        added = sum(sum(result) for result in results)
        assert added == 600  # every row added by exactly one of the two
        assert await first.ledger(NOW - DAY, NOW + DAY) == rows
    finally:
        await first.close()
        await second.close()


async def test_a_nul_in_a_rows_text_is_stored_escaped(pg: Storage) -> None:
    """PostgreSQL's text holds no NUL (SQLite's does): a provider's error message echoing
    a client's value with one was refused for ever, with the rows of its batch, and then
    blocked the spool behind it. It is stored as ``\\x00``, as `spendgate.text.escape`
    writes it; the other rows of the batch are stored as they are."""
    odd = build_row(error="upstream 400: Invalid value: 'user\x00'.", served_model="m\x00")
    plain = build_row()
    assert await pg.ledger_store.append([odd, plain]) == [True, True]
    assert await pg.ledger_store.row(odd.request_id) == replace(
        odd, error="upstream 400: Invalid value: 'user\\x00'.", served_model="m\\x00"
    )
    assert await pg.ledger_store.row(plain.request_id) == plain


# -- partitions and retention -----------------------------------------------------------


async def test_partitions_are_created_ahead_and_on_demand(pg: Storage, pg_url: str) -> None:
    assert await partitions_of(pg_url) == ["ledger_p202611", "ledger_p202612", "ledger_p202701"]
    old = build_row(ts=datetime(2025, 3, 15, tzinfo=UTC))  # e.g. a row spooled for long
    await pg.record(old)
    assert "ledger_p202503" in await partitions_of(pg_url)
    assert await pg.ledger(old.ts - DAY, old.ts + DAY) == [old]


async def test_retention_drops_whole_months_and_keeps_the_rest(
    pg_url: str, clock: ManualClock
) -> None:
    settings = PostgresSettings(retention_months=3, partitions_ahead=1)
    store = PostgresStorage(pg_url, clock=clock, settings=settings)
    await store.open()
    try:
        months = [datetime(2026, month, 10, tzinfo=UTC) for month in range(6, 12)]
        rows = [build_row(ts=moment) for moment in months]
        assert await store.ledger_store.append(rows) == [True] * 6

        dropped = await store.database.maintain()  # now: 2026-11-29

        assert dropped == [(2026, 6), (2026, 7), (2026, 8)]
        assert await partitions_of(pg_url) == [
            "ledger_p202609",
            "ledger_p202610",
            "ledger_p202611",
            "ledger_p202612",
        ]
        since = datetime(2026, 1, 1, tzinfo=UTC)
        assert await store.ledger(since, since + 365 * DAY) == rows[3:]
        ids = await fetch(pg_url, "SELECT request_id FROM ledger_ids ORDER BY ts")
        assert [row[0] for row in ids] == [row.request_id for row in rows[3:]]
        # A month begins: the oldest kept month goes, the next one is created ahead.
        clock.advance((datetime(2026, 12, 1, tzinfo=UTC) - NOW).total_seconds())
        assert await store.database.maintain() == [(2026, 9)]
        assert "ledger_p202701" in await partitions_of(pg_url)
    finally:
        await store.close()


async def test_retention_holds_the_ledger_locked_only_for_the_drop(
    pg_url: str, clock: ManualClock
) -> None:
    """Dropping a partition locks the whole ledger (ACCESS EXCLUSIVE) until COMMIT; the
    deletes of the dropped months' request ids and rollups run first, so rows keep being
    written while they take long (here: held by a row lock another session keeps)."""
    settings = PostgresSettings(retention_months=3, partitions_ahead=1)
    store = PostgresStorage(pg_url, clock=clock, settings=settings)
    await store.open()
    blocker, watcher = await asyncpg.connect(pg_url), await asyncpg.connect(pg_url)
    try:
        old = build_row(ts=datetime(2026, 6, 10, tzinfo=UTC))
        assert await store.ledger_store.append([old]) == [True]
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            "SELECT 1 FROM ledger_ids WHERE request_id = $1 FOR UPDATE", old.request_id
        )
        retention = asyncio.ensure_future(store.database.maintain())
        for _ in range(200):  # until its delete waits on the blocker's row lock
            waiting = await watcher.fetchval(  # (outside a transaction: a fresh view)
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM ledger_ids%'"
            )
            if waiting:
                break
            await asyncio.sleep(0.05)
        assert waiting == 1
        fresh = build_row(ts=NOW)
        written = await asyncio.wait_for(store.ledger_store.append([fresh]), 20)
        assert written == [True]  # not held behind the retention's lock on the ledger
        assert not retention.done()
        await transaction.rollback()
        assert await asyncio.wait_for(retention, 20) == [(2026, 6)]
        assert await store.ledger_store.row(fresh.request_id) == fresh
        assert await store.ledger_store.row(old.request_id) is None
    finally:
        await blocker.close()
        await watcher.close()
        await store.close()


async def test_retention_deletes_in_bounded_chunks(
    pg_url: str, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dropped months' request ids and rollups went in one DELETE per table: at scale
    (millions of request ids a month) it ran past the statement timeout and retention
    failed every hour. They now go in chunks of at most `RETENTION_CHUNK` rows, each its
    own statement (counted here by a statement trigger, the chunk made small)."""
    monkeypatch.setattr(database, "RETENTION_CHUNK", 3, raising=False)
    settings = PostgresSettings(retention_months=3, partitions_ahead=1)
    store = PostgresStorage(pg_url, clock=clock, settings=settings)
    await store.open()
    conn = await asyncpg.connect(pg_url)
    try:
        await conn.execute(
            "CREATE TABLE deletes (name TEXT, n BIGINT);"
            "CREATE FUNCTION count_deleted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO deletes SELECT TG_TABLE_NAME, count(*) FROM gone; RETURN NULL; END $$;"
            "CREATE TRIGGER counted AFTER DELETE ON ledger_ids REFERENCING OLD TABLE AS gone "
            "FOR EACH STATEMENT EXECUTE FUNCTION count_deleted();"
            "CREATE TRIGGER counted AFTER DELETE ON ledger_hourly REFERENCING OLD TABLE AS gone "
            "FOR EACH STATEMENT EXECUTE FUNCTION count_deleted();"
        )
        old = [  # ten rows in dropped months, each its own hour
            build_row(ts=datetime(2026, 6 + n % 2, 10, n, tzinfo=UTC)) for n in range(10)
        ]
        kept = build_row(ts=datetime(2026, 10, 10, tzinfo=UTC))
        assert await store.ledger_store.append([*old, kept]) == [True] * 11

        assert await store.database.maintain() == [(2026, 6), (2026, 7)]

        ids = await fetch(pg_url, "SELECT request_id FROM ledger_ids")
        assert ids == [(kept.request_id,)]  # every dropped id gone, the kept one there
        hours = await fetch(pg_url, "SELECT hour_ms FROM ledger_hourly")
        assert len(hours) == 1
        counts = await conn.fetch("SELECT name, n FROM deletes")
        for name in ("ledger_ids", "ledger_hourly"):
            removed = [row["n"] for row in counts if row["name"] == name]
            assert sum(removed) == 10
            assert max(removed) <= 3, removed  # no statement took more than a chunk
    finally:
        await conn.close()
        await store.close()


# -- budgets across processes -----------------------------------------------------------


def test_two_gateway_processes_never_overshoot_a_shared_budget(pg_url: str) -> None:
    start_at = time.time() + 3.0
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), "reserve", pg_url, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0, 0], outputs
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    assert sum(admitted for admitted, _ in counts) == FITS  # all that fit, not one more
    assert sum(reserved for _, reserved in counts) == FITS * FULL
    assert all(admitted < RESERVATIONS for admitted, _ in counts)

    async def state() -> tuple[int, int]:
        store = open_storage(pg_url, clock=ManualClock(NOW))
        await store.open()
        try:
            team = ref(budget("shared", limit=FITS * FULL + FULL // 2), NOW)
            found = await one(store, team, NOW)
            return found.reserved, found.spent
        finally:
            await store.close()

    assert asyncio.run(state()) == (FITS * FULL, 0)


async def test_two_sweepers_settle_each_lapsed_reservation_once(
    pg_url: str, clock: ManualClock
) -> None:
    first, second = open_storage(pg_url, clock=clock), open_storage(pg_url, clock=clock)
    await first.open()
    await second.open()
    try:
        team = ref(budget("team", limit=10**12), NOW)
        plans = [plan([team], NOW, owner="gw-dead") for _ in range(700)]
        decisions = await asyncio.gather(*(first.reserve(p) for p in plans))
        assert all(isinstance(d, Admitted) for d in decisions)
        clock.advance(LEASE.total_seconds() + 1)

        swept = await asyncio.gather(first.sweep(clock.now()), second.sweep(clock.now()))

        ids = [row.request_id for rows in swept for row in rows]
        assert sorted(ids) == sorted(p.reservation_id for p in plans)  # each once, in all
        assert await one(first, team, NOW) == replace(
            await one(second, team, NOW), spent=700 * FULL, reserved=0
        )
        rows = await first.ledger(NOW - DAY, NOW + DAY)
        assert len(rows) == 700
        assert all(row.unreconciled for row in rows)
    finally:
        await first.close()
        await second.close()


async def test_settle_and_sweep_racing_charge_once(pg_url: str, clock: ManualClock) -> None:
    """A gateway settling while another sweeps the same lapsed reservations: each
    reservation is charged once, by whichever got it, and has one row."""
    first, second = open_storage(pg_url, clock=clock), open_storage(pg_url, clock=clock)
    await first.open()
    await second.open()
    try:
        team = ref(budget("team", limit=10**12), NOW)
        plans = [plan([team], NOW) for _ in range(300)]
        await asyncio.gather(*(first.reserve(p) for p in plans))
        clock.advance(LEASE.total_seconds() + 1)
        late = [build_row(request_id=p.reservation_id, ts=NOW, cost_nanos=7) for p in plans]

        settled, swept = await asyncio.gather(
            asyncio.gather(
                *(first.settle(p.reservation_id, (7,), r) for p, r in zip(plans, late, strict=True))
            ),
            second.sweep(clock.now()),
        )

        assert sum(settled) + len(swept) == 300
        state = await one(first, team, NOW)
        assert (state.spent, state.reserved) == (sum(settled) * 7 + len(swept) * FULL, 0)
        assert len(await first.ledger(NOW - DAY, NOW + DAY)) == 300
    finally:
        await first.close()
        await second.close()


# -- configuration and reachability -----------------------------------------------------


def test_the_storage_section_sizes_the_pool_and_sets_retention(pg_url: str) -> None:
    config = StorageConfig.model_validate(
        {"url": pg_url, "postgres": {"pool_max_size": 3, "retention_months": 13}}
    )
    store = open_storage(config.url, config=config)
    assert isinstance(store, PostgresStorage)
    assert (store.database.settings.pool_max, store.database.settings.retention_months) == (3, 13)
    assert config.spool_path() == Path("spendgate.spool")  # rows wait on local disk
    assert StorageConfig.model_validate({"url": pg_url, "spool_dir": None}).spool_path() is None


async def test_an_unreachable_server_is_a_storage_error_naming_no_password() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = open_storage(f"postgresql://root:hunter2@127.0.0.1:{port}/spendgate")
    with pytest.raises(StorageError, match="PostgreSQL storage is unavailable") as caught:
        await store.open()
    assert "hunter2" not in str(caught.value)
    assert "hunter2" not in repr(store)
    with pytest.raises(StorageError, match="not open"):  # and may be opened again later
        await store.check()


async def test_synchronous_commit_is_the_operators_choice(pg_url: str) -> None:
    for value, shown in ((True, "on"), (False, "off")):
        config = StorageConfig.model_validate(
            {"url": pg_url, "postgres": {"synchronous_commit": value}}
        )
        store = open_storage(config.url, config=config)
        assert isinstance(store, PostgresStorage)
        await store.open()
        try:
            found = await store.database.run(
                lambda conn: conn.fetchval("SHOW synchronous_commit"), "a setting"
            )
            assert found == shown
        finally:
            await store.close()
