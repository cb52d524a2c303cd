"""Keys and answered rows across gateways, with a request's storage round trips off its path.

* A gateway whose keys are in PostgreSQL starts a request on the key it last read for the
  secret while it reads it again (`KeyService.remembered`), and writes or forwards nothing
  before that read confirms it. A key changed on another gateway (or straight in storage)
  holds on the next request exactly as when every request read it first: revoked or
  rotated away, ``401`` with nothing sent upstream and no row (even for a request that
  would also be refused for its body); its team changed, the next request is counted
  under the new team. Its reservation is made beside that read (two servers at once),
  held until the read answers, and given back when the key is refused: shown with the
  read held by a lock on ``api_keys``.
* A budgeted request is answered before its row is written, and the handler no longer
  waits for the write (the next request on the connection does not queue behind it). On
  PostgreSQL alone the lease holds the worst case until the row settles it, as before; on
  Redis + PostgreSQL the counters are charged before the answer and the row is kept in
  Redis until the ledger has it (`RowKeeper`). Shown with the row's write held by a lock
  on ``ledger_ids`` when the gateway is ``kill -9``'d after answering: the request ends
  with exactly one row and the counters equal the ledger, nothing reserved.
"""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from e2e.process import create_key_direct
from e2e.test_multinode import MAX_TOKENS, OUTPUT_TOKENS, PROMPT, fleet, until
from e2e.workers_world import budget_states, read_rows, throwaway_stores
from spendgate.clock import SystemClock
from spendgate.config import load_config
from spendgate.services.keys import KeyService, KeyUpdate
from spendgate.simulator.thread import SimulatorThread
from spendgate.storage.open import open_storage

pytestmark = pytest.mark.slow

KINDS = ["sqlite", "postgres", "redis-pg"]


def team_budgets(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "teams", "scope": "team", "match": "*", "limit_usd": "5", "period": "daily"}
    ]
    data["budget_settings"] = {"lease_ttl_s": 1}


async def _post(
    session: aiohttp.ClientSession, url: str, secret: str, model: str = "gpt-4o-mini"
) -> int:
    body = {"model": model, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    sent = {"authorization": f"Bearer {secret}", "x-sim-output-tokens": str(OUTPUT_TOKENS)}
    async with session.post(f"{url}/v1/chat/completions", json=body, headers=sent) as r:
        await r.read()
        return r.status


def _change_key(config: Path, key_id: str, how: str) -> str | None:
    """Change the key straight in storage (as another gateway's admin API or the CLI
    would): ``team`` moves it to ``web``; ``rotate`` gives it a new secret (returned);
    ``revoke`` revokes it."""
    loaded = load_config(config)

    async def change() -> str | None:
        storage = open_storage(loaded.storage.url)
        await storage.open()
        try:
            keys = KeyService(storage, loaded, SystemClock())
            if how == "team":
                await keys.update(key_id, KeyUpdate(changed=frozenset({"team"}), team="web"))
            elif how == "rotate":
                return (await keys.rotate(key_id)).secret
            else:
                await keys.revoke(key_id)
            return None
        finally:
            await storage.close()

    return asyncio.run(change())


@pytest.mark.parametrize("kind", KINDS)
def test_a_key_changed_elsewhere_holds_on_the_next_request(tmp_path: Path, kind: str) -> None:
    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, "gateways-2", team_budgets) as running:
            key = create_key_direct(running.config, name="moved", team="ml")
            other = running.urls[1]  # the change is made elsewhere; requests go here
            statuses: list[int] = []
            calls: list[int] = []

            async def scenario() -> None:
                # one keep-alive connection, as an SDK keeps: the gateway remembers the key
                async with aiohttp.ClientSession() as session:
                    for _ in range(3):
                        statuses.append(await _post(session, other, key.secret))
                    await asyncio.to_thread(_change_key, running.config, key.key.id, "team")
                    statuses.append(await _post(session, other, key.secret))
                    new = await asyncio.to_thread(_change_key, running.config, key.key.id, "rotate")
                    assert new is not None
                    calls.append(len(sim.records))
                    statuses.append(await _post(session, other, key.secret))  # the old one
                    statuses.append(await _post(session, other, key.secret, model="no-such"))
                    statuses.append(await _post(session, other, new))
                    await asyncio.to_thread(_change_key, running.config, key.key.id, "revoke")
                    calls.append(len(sim.records))
                    statuses.append(await _post(session, other, new))
                    statuses.append(await _post(session, other, new, model="no-such"))
                    calls.append(len(sim.records))

            asyncio.run(scenario())
            assert running.stop() == [0, 0]
        rows = read_rows(stores)
        states = budget_states(running.config)

    assert statuses == [200, 200, 200, 200, 401, 401, 200, 401, 401]
    assert calls == [4, 5, 5]  # nothing went upstream for a refused key
    assert [row.team for row in rows] == ["ml", "ml", "ml", "web", "web"]  # no row for a 401
    by_team = Counter[str]()
    for row in rows:
        by_team[row.team or ""] += row.cost_nanos
    assert sorted((s[1], s[2], s[3]) for s in states) == [
        ("ml", by_team["ml"], 0),
        ("web", by_team["web"], 0),
    ]


class TableLock:
    """An open transaction holding ``table`` in ``mode`` (EXCLUSIVE: reads pass, writes
    wait; ACCESS EXCLUSIVE: reads wait too), in a thread of its own, until `release`."""

    def __init__(self, url: str, table: str = "ledger_ids", mode: str = "EXCLUSIVE") -> None:
        self._url = url
        self._statement = f"LOCK TABLE {table} IN {mode} MODE"
        self._locked = threading.Event()
        self._release = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._hold()), daemon=True)

    async def _hold(self) -> None:
        conn = await asyncpg.connect(self._url, timeout=10)
        try:
            async with conn.transaction():
                await conn.execute(self._statement)
                self._locked.set()
                await asyncio.to_thread(self._release.wait, 60)
        finally:
            await conn.close()

    def __enter__(self) -> TableLock:
        self._thread.start()
        assert self._locked.wait(20), "the lock was never taken"
        return self

    def release(self) -> None:
        self._release.set()
        self._thread.join(30)

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@pytest.mark.parametrize("kind", ["postgres", "redis-pg"])
def test_kill_9_after_the_answer_before_its_row_leaves_one_row(tmp_path: Path, kind: str) -> None:
    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, "gateways-2", team_budgets) as running:
            survivor, victim = running.processes
            key = create_key_direct(running.config, name="answered", team="ml")

            async def one() -> int:
                async with aiohttp.ClientSession() as session:
                    return await _post(session, victim.url, key.secret)

            with TableLock(stores.url) as lock:  # ledger inserts wait
                assert asyncio.run(one()) == 200  # answered while its row cannot be written
                assert read_rows(stores) == []
                [(_, _, spent, reserved)] = budget_states(running.config)
                if kind == "redis-pg":  # charged before the answer, its row kept in Redis
                    assert (spent > 0, reserved) == (True, 0)
                else:  # its lease holds the worst case until the row settles it
                    assert (spent, reserved > 0) == (0, True)
                assert victim.kill9() == -9
                lock.release()
            # after 1 s (the lease, or the kept row's due time) the survivor's sweeper
            # writes its row, once
            until(
                lambda: (
                    len(read_rows(stores)) == 1
                    and not any(s[3] for s in budget_states(running.config))
                ),
                "the answered request's row written and nothing reserved",
            )
            assert survivor.stop() == 0
        rows = read_rows(stores)
        states = budget_states(running.config)

    assert len(sim.records) == 1
    assert len(rows) == 1  # once: the row written, or the lapsed lease's, never both
    if kind == "redis-pg":  # the kept row: what the request really used
        assert (rows[0].output_tokens, rows[0].unreconciled) == (OUTPUT_TOKENS, False)
    assert [(s[1], s[2], s[3]) for s in states] == [("ml", rows[0].cost_nanos, 0)]


@pytest.mark.parametrize("kind", ["postgres", "redis-pg"])
def test_a_revoked_key_gives_back_what_it_reserved_beside_its_read(
    tmp_path: Path, kind: str
) -> None:
    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, "gateways-2", team_budgets) as running:
            key = create_key_direct(running.config, name="held", team="ml")
            url = running.urls[0]

            def reserved() -> bool:
                return any(s[3] for s in budget_states(running.config, "teams"))

            async def scenario() -> tuple[int, int]:
                async with aiohttp.ClientSession() as session:
                    first = await _post(session, url, key.secret)  # the key is remembered
                    await asyncio.to_thread(_change_key, running.config, key.key.id, "revoke")
                    with TableLock(stores.url, "api_keys", "ACCESS EXCLUSIVE") as lock:
                        second = asyncio.ensure_future(_post(session, url, key.secret))
                        # the key's read waits on the lock; its reservation does not
                        await asyncio.to_thread(until, reserved, "a reservation beside the read")
                        assert not second.done()
                        lock.release()
                        return first, await second

            statuses = asyncio.run(scenario())
            assert not reserved()  # given back before the 401
            assert running.stop() == [0, 0]
        rows = read_rows(stores)
        states = budget_states(running.config)

    assert statuses == (200, 401)
    assert len(sim.records) == 1  # nothing went upstream on the revoked key
    assert len(rows) == 1
    assert [(s[1], s[2], s[3]) for s in states] == [("ml", rows[0].cost_nanos, 0)]
