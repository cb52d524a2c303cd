"""Hard budgets hold across the workers of ``serve --workers N``, and a worker killed with
requests in flight leaks nothing.

1,000 requests at once (aiohttp, a connection each, so the kernel spreads them over the
workers) against a team budget worth about a dozen of them: the ledger's total stays
within the limit (overshoot 0), every call the simulator received has exactly one ledger
row, and nothing stays reserved. Then SIGKILL of one worker while requests wait in both:
the supervisor restarts it, the dead worker's leases lapse and are settled once each
(charged their worst case, flagged unreconciled), the other worker's requests complete
normally, and reserved returns to 0.

Storage: ``$SPENDGATE_TEST_STORAGE_URLS`` (`e2e.workers_world`), SQLite by default.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e.process import create_key_direct
from e2e.workers_world import (
    WorkerConnection,
    budget_states,
    close_all,
    connections_per_worker,
    read_rows,
    start_workers,
    storage_url,
    storage_urls,
    wait_for_log,
)
from spendgate.money import dollars_to_nanos
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

REQUESTS = 1000
LIMIT_USD = "0.001"  # gpt-4o-mini: about 60 micro-dollars a request at its worst case
MAX_TOKENS = 100
OUTPUT_TOKENS = 75
PROMPT = [{"role": "user", "content": "Count from one to ten, slowly."}]


def tight_budget(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "tight", "scope": "team", "match": "ml", "limit_usd": LIMIT_USD, "period": "daily"}
    ]
    data["budget_settings"] = {"min_output_tokens": MAX_TOKENS}


async def fire(url: str, secret: str, count: int) -> Counter[int]:
    body = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": MAX_TOKENS}
    headers = {"authorization": f"Bearer {secret}", "x-sim-output-tokens": str(OUTPUT_TOKENS)}
    connector = aiohttp.TCPConnector(limit=0, force_close=True)  # a connection a request
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> int:
            async with session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r:
                await r.read()
                return r.status

        return Counter(await asyncio.gather(*(one() for _ in range(count))))


@pytest.mark.parametrize("workers", [2, 3])
@pytest.mark.parametrize("kind", storage_urls())
def test_a_thousand_concurrent_requests_never_overshoot_across_workers(
    tmp_path: Path, kind: str, workers: int
) -> None:
    url = storage_url(kind, tmp_path)
    with SimulatorThread() as sim:
        prom = tmp_path / "prom"
        env = {"PROMETHEUS_MULTIPROC_DIR": str(prom)}
        config, process = start_workers(
            tmp_path, sim.url, workers, url=url, edit=tight_budget, env=env
        )
        try:
            key = create_key_direct(config, name="burst", team="ml")
            statuses = asyncio.run(fire(process.url, key.secret, REQUESTS))
        finally:
            assert process.stop() == 0
        calls = len(sim.records)

    # every worker took part: each counted requests in its own file of counters
    assert len(list(prom.glob("counter_*.db"))) == workers
    assert set(statuses) <= {200, 429}, statuses
    assert sum(statuses.values()) == REQUESTS
    rows = [row for row in read_rows(url) if row.blocked_by is None]
    assert max(Counter(row.request_id for row in rows).values()) == 1
    assert len(rows) == calls == statuses[200] > 0  # one row per upstream call
    spent = sum(row.cost_nanos for row in rows)
    assert spent <= dollars_to_nanos(LIMIT_USD)  # overshoot 0
    states = budget_states(config)
    assert [(s[0], s[2], s[3]) for s in states] == [("tight", spent, 0)]
    print(f"\n{workers} workers: {statuses[200]} served, {statuses[429]} refused, spent {spent}")


HELD = 4  # requests held in flight in each worker
HELD_MS = 4000


@pytest.mark.parametrize("kind", storage_urls())
def test_kill_9_of_one_worker_mid_load_settles_its_leases_once(tmp_path: Path, kind: str) -> None:
    url = storage_url(kind, tmp_path)

    def edit(data: dict[str, Any]) -> None:
        data["budgets"] = [
            {"name": "team", "scope": "team", "match": "ml", "limit_usd": "5", "period": "daily"}
        ]
        data["budget_settings"] = {"lease_ttl_s": 1}

    with SimulatorThread() as sim:
        config, process = start_workers(tmp_path, sim.url, 2, url=url, edit=edit)
        try:
            key = create_key_direct(config, name="held", team="ml")
            pools = connections_per_worker(process, 2, HELD)
            outcomes: dict[int, list[Any]] = {0: [], 1: []}

            def held(connection: WorkerConnection) -> None:
                try:
                    status, _ = connection.request(
                        "POST",
                        "/v1/chat/completions",
                        {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": MAX_TOKENS},
                        token=key.secret,
                        headers={"x-sim-delay-ms": str(HELD_MS)},
                    )
                    outcomes[connection.worker].append(status)
                except OSError as exc:
                    outcomes[connection.worker].append(type(exc).__name__)

            threads = [
                threading.Thread(target=held, args=(c,)) for conns in pools.values() for c in conns
            ]
            for thread in threads:
                thread.start()
            # every held request reached the upstream: its reservation is made
            assert sim.wait_until(lambda records: len(records) == 2 * HELD, 20)
            assert sum(s[3] for s in budget_states(config)) > 0
            os.kill(pools[1][0].pid, signal.SIGKILL)
            for thread in threads:
                thread.join(30)
            wait_for_log(process, "worker died: restarting")
            deadline = time.monotonic() + 20  # the lease lapses after 1 s; a sweep settles it
            while any(s[3] for s in budget_states(config)) and time.monotonic() < deadline:
                time.sleep(0.1)
            for conns in pools.values():
                close_all(dict(enumerate(conns)))
        finally:
            assert process.stop() == 0
        calls = len(sim.records)

    assert outcomes[0] == [200] * HELD  # the other worker's requests were not disturbed
    assert len(outcomes[1]) == HELD
    assert 200 not in outcomes[1]
    rows = read_rows(url)
    assert max(Counter(row.request_id for row in rows).values()) == 1  # settled once each
    assert len(rows) == calls == 2 * HELD
    lapsed = [row for row in rows if row.unreconciled]
    assert len(lapsed) == HELD
    assert all(row.output_tokens == MAX_TOKENS for row in lapsed)  # charged the worst case
    states = budget_states(config)
    assert [(s[2], s[3]) for s in states] == [(sum(r.cost_nanos for r in rows), 0)]
