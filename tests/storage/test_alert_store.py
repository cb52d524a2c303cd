"""The alert store role, on every backend: an alert is raised once per key, however many
callers race to raise it (and, on SQLite, however many processes' stores: two storages
on one file); deliveries are claimed under a lease, one holder at a time; attempts are
recorded; the log reads back what happened."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

from storage_samples import NOW

from spendgate.clock import ManualClock, to_ms
from spendgate.domain.alerts import Alert
from spendgate.storage import Storage, open_storage
from spendgate.storage.alerts import AlertStore


def _alert(mark: str = "8000", member: str = "ml") -> Alert:
    return Alert(
        "threshold",
        "team-monthly",
        member,
        to_ms(NOW.replace(day=1)),
        mark,
        NOW,
        f"team-monthly: {member} passed {mark}",
        "text",
        (("budget", "team-monthly"),),
    )


def _store(storage: Storage) -> AlertStore:
    assert storage.alert_store is not None
    return storage.alert_store


async def test_an_alert_is_raised_once_however_many_race_to_raise_it(storage: Storage) -> None:
    store = _store(storage)
    ids = await asyncio.gather(*(store.raise_alert(_alert(), ["ops", "mail"]) for _ in range(200)))
    raised = [i for i in ids if i is not None]
    assert len(raised) == 1
    log = await store.log(100)
    assert sorted(entry.channel for entry in log) == ["mail", "ops"]
    assert {entry.status for entry in log} == {"pending"}
    other = await store.raise_alert(_alert("9500"), ["ops"])  # another threshold: its own
    assert other is not None
    assert other != raised[0]
    next_member = await store.raise_alert(_alert(member="web"), ["ops"])
    assert next_member is not None


async def test_two_storages_on_one_sqlite_file_raise_once(tmp_path: Path) -> None:
    clock = ManualClock(NOW)
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first, second = open_storage(url, clock=clock), open_storage(url, clock=clock)
    await first.open()
    await second.open()
    try:
        ids = await asyncio.gather(
            *(_store(s).raise_alert(_alert(), ["ops"]) for _ in range(100) for s in (first, second))
        )
        assert len([i for i in ids if i is not None]) == 1
        assert len(await _store(second).log(10)) == 1
    finally:
        await first.close()
        await second.close()


async def test_a_claim_holds_until_its_lease_lapses(storage: Storage, clock: ManualClock) -> None:
    store = _store(storage)
    await store.raise_alert(_alert(), ["ops"])
    now = clock.now()
    lease = now + timedelta(seconds=30)
    [mine] = await store.claim_due("a", now, lease, 10)
    assert mine.channel == "ops"
    assert mine.attempts == 0
    assert mine.payload["mark"] == "8000"
    assert await store.claim_due("b", now, lease, 10) == []  # held by a
    later = now + timedelta(seconds=31)
    [taken] = await store.claim_due("b", later, later + timedelta(seconds=30), 10)
    assert taken.delivery_id == mine.delivery_id
    assert not await store.finish(mine.delivery_id, "a", later, error=None, retry_at=None)
    assert await store.finish(taken.delivery_id, "b", later, error=None, retry_at=None)
    [entry] = await store.log(10)
    assert (entry.status, entry.attempts, entry.delivered_at) == ("delivered", 1, later)


async def test_attempts_retry_then_fail(storage: Storage, clock: ManualClock) -> None:
    store = _store(storage)
    await store.raise_alert(_alert(), ["ops"])
    now = clock.now()
    lease = now + timedelta(seconds=30)
    [claimed] = await store.claim_due("a", now, lease, 10)
    retry_at = now + timedelta(seconds=5)
    await store.finish(claimed.delivery_id, "a", now, error="HTTP 500", retry_at=retry_at)
    assert await store.claim_due("a", now, lease, 10) == []  # not due yet
    [again] = await store.claim_due("a", retry_at, retry_at + timedelta(seconds=30), 10)
    assert again.attempts == 1
    await store.finish(again.delivery_id, "a", retry_at, error="HTTP 503", retry_at=None)
    [entry] = await store.log(10)
    assert (entry.status, entry.attempts, entry.last_error) == ("failed", 2, "HTTP 503")
    assert await store.log(10, "pending") == []
    assert await store.claim_due("a", retry_at + timedelta(days=1), retry_at, 10) == []


async def test_deliveries_survive_a_restart(persistent_url: str, clock: ManualClock) -> None:
    first = open_storage(persistent_url, clock=clock)
    await first.open()
    await _store(first).raise_alert(_alert(), ["ops"])
    await first.close()
    second = open_storage(persistent_url, clock=clock)
    await second.open()
    try:
        now = clock.now()
        [due] = await _store(second).claim_due("b", now, now + timedelta(seconds=1), 10)
        assert due.payload["title"] == "team-monthly: ml passed 8000"
        assert await _store(second).raise_alert(_alert(), ["ops"]) is None  # still raised
    finally:
        await second.close()
