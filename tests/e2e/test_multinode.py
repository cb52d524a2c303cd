"""Several gateways on one set of stores, every guarantee intact (issue 16).

Each test starts real ``spendgate serve`` processes against the simulator: two or three
gateways on separate ports sharing the stores (as replicas behind a load balancer would),
or one gateway with ``--workers 2``; the stores are SQLite (one file), PostgreSQL (a
throwaway database on 127.0.0.1:5432) or Redis + PostgreSQL (a key prefix of the test's own
on 127.0.0.1:6379), made per test by `e2e.workers_world.throwaway_stores`.

* 1,000 concurrent requests against a small team budget, spread over the replicas: the
  ledger's total stays within the limit (overshoot 0), every upstream call has exactly one
  ledger row (counted against the simulator's records), nothing stays reserved.
* One replica ``kill -9``'d with requests in flight: the survivor's requests complete, the
  dead one's leases lapse and the survivor's sweeper settles each once (worst case,
  unreconciled); reserved returns to 0.
* A request-rate limit across three replicas: exactly the limit is admitted (its
  documented bound: never more than the limit in a window; across replicas nothing more).

The outage tests (Redis restarted, PostgreSQL stopped and restarted mid-load) are in
`test_multinode_outages.py`. Everything is driven by counts; the only waits are bounded
polls for a state.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from e2e.process import GatewayProcess, create_key_direct, gateway_env, write_config
from e2e.workers_world import (
    Stores,
    budget_states,
    configure_storage,
    read_rows,
    throwaway_stores,
    wait_for_log,
)
from spendgate.money import dollars_to_nanos
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

KINDS = ["sqlite", "postgres", "redis-pg"]
SHAPES = ["gateways-2", "gateways-3", "workers-2"]
REQUESTS = 1000
LIMIT_USD = "0.001"  # gpt-4o-mini: about 60 micro-dollars a request at its worst case
MAX_TOKENS = 100
OUTPUT_TOKENS = 75
PROMPT = [{"role": "user", "content": "Count from one to ten, slowly."}]


def until(check: Callable[[], bool], what: str, limit_s: float = 30.0) -> None:
    """Poll ``check`` (a bound, not a timing: the test waits for a state, never a delay)."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def with_small_pool(
    edit: Callable[[dict[str, Any]], None] | None,
) -> Callable[[dict[str, Any]], None]:
    """At most 8 PostgreSQL connections a gateway process: the shared server's
    max_connections (100) also serves every other test running at once."""

    def edited(data: dict[str, Any]) -> None:
        if edit is not None:
            edit(data)
        data["storage"]["postgres"] = {"pool_min_size": 1, "pool_max_size": 8}

    return edited


class Fleet:
    """Gateways sharing ``stores``: ``gateways-N`` (N processes, each its own port and
    config folder) or ``workers-N`` (one ``serve --workers N``)."""

    def __init__(
        self,
        tmp_path: Path,
        sim_url: str,
        stores: Stores,
        shape: str,
        edit: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        kind, _, count = shape.partition("-")
        self.processes: list[GatewayProcess] = []
        self.configs: list[Path] = []
        folders = [tmp_path / f"gw{i}" for i in range(int(count) if kind == "gateways" else 1)]
        if stores.url.startswith("postgresql://"):
            edit = with_small_pool(edit)
        for folder in folders:
            folder.mkdir()
            self.configs.append(
                write_config(folder, sim_url, configure=configure_storage(stores, edit))
            )
        args = ("--workers", count) if kind == "workers" else ()
        try:
            for config in self.configs:
                process = GatewayProcess(config, args=args, env=gateway_env())
                self.processes.append(process)
                process.start()
                if args:
                    wait_for_log(process, "all workers listening")
        except BaseException:
            self.stop()
            raise

    @property
    def config(self) -> Path:
        return self.configs[0]

    @property
    def urls(self) -> list[str]:
        return [p.url for p in self.processes]

    def stop(self) -> list[int | None]:
        return [p.stop() for p in self.processes]


@contextmanager
def fleet(
    tmp_path: Path,
    sim_url: str,
    stores: Stores,
    shape: str,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Fleet]:
    running = Fleet(tmp_path, sim_url, stores, shape, edit)
    try:
        yield running
    finally:
        running.stop()


async def fire(
    urls: list[str], secret: str, count: int, headers: dict[str, str] | None = None
) -> Counter[int]:
    """``count`` requests at once, a connection each, spread over ``urls`` in turn."""
    body = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": MAX_TOKENS}
    sent = {"authorization": f"Bearer {secret}", "x-sim-output-tokens": str(OUTPUT_TOKENS)}
    sent.update(headers or {})
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(url: str) -> int:
            async with session.post(f"{url}/v1/chat/completions", json=body, headers=sent) as r:
                await r.read()
                return r.status

        return Counter(await asyncio.gather(*(one(urls[i % len(urls)]) for i in range(count))))


def tight_budget(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "tight", "scope": "team", "match": "ml", "limit_usd": LIMIT_USD, "period": "daily"}
    ]
    data["budget_settings"] = {"min_output_tokens": MAX_TOKENS}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", KINDS)
def test_a_thousand_concurrent_requests_never_overshoot_across_gateways(
    tmp_path: Path, kind: str, shape: str
) -> None:
    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, shape, tight_budget) as running:
            key = create_key_direct(running.config, name="burst", team="ml")
            statuses = asyncio.run(fire(running.urls, key.secret, REQUESTS))
            assert running.stop() == [0] * len(running.processes)
        calls = len(sim.records)
        rows = [row for row in read_rows(stores) if row.blocked_by is None]
        states = budget_states(running.config)

    assert set(statuses) <= {200, 429}, statuses
    assert sum(statuses.values()) == REQUESTS
    assert max(Counter(row.request_id for row in rows).values()) == 1
    assert len(rows) == calls == statuses[200] > 0  # one row per upstream call
    spent = sum(row.cost_nanos for row in rows)
    assert spent <= dollars_to_nanos(LIMIT_USD)  # overshoot 0
    assert [(s[0], s[2], s[3]) for s in states] == [("tight", spent, 0)]  # nothing reserved


HELD = 4  # requests held in flight at each replica
HELD_MS = 4000


@pytest.mark.parametrize("kind", KINDS)
def test_kill_9_of_one_replica_mid_load_settles_its_leases_once(tmp_path: Path, kind: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["budgets"] = [
            {"name": "team", "scope": "team", "match": "ml", "limit_usd": "5", "period": "daily"}
        ]
        data["budget_settings"] = {"lease_ttl_s": 1}

    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, "gateways-2", edit) as running:
            survivor, victim = running.processes
            key = create_key_direct(running.config, name="held", team="ml")
            outcomes: dict[int, list[Any]] = {0: [], 1: []}

            def held(index: int) -> None:
                try:
                    statuses = asyncio.run(
                        fire(
                            [running.urls[index]],
                            key.secret,
                            1,
                            headers={"x-sim-delay-ms": str(HELD_MS)},
                        )
                    )
                    outcomes[index].extend(statuses.elements())
                except (aiohttp.ClientError, OSError) as exc:
                    outcomes[index].append(type(exc).__name__)

            threads = [
                threading.Thread(target=held, args=(i,)) for i in (0, 1) for _ in range(HELD)
            ]
            for thread in threads:
                thread.start()
            # every held request reached the upstream: its reservation is made
            until(lambda: len(sim.records) == 2 * HELD, "every held request upstream")
            assert sum(s[3] for s in budget_states(running.config)) > 0
            assert victim.kill9() == -9
            for thread in threads:
                thread.join(30)
            # the lease lapses after 1 s; the survivor's sweeper settles it
            until(
                lambda: not any(s[3] for s in budget_states(running.config)),
                "the dead replica's reservations settled",
            )
            assert survivor.stop() == 0
        calls = len(sim.records)
        rows = read_rows(stores)
        states = budget_states(running.config)

    assert outcomes[0] == [200] * HELD  # the survivor's requests were not disturbed
    assert len(outcomes[1]) == HELD
    assert 200 not in outcomes[1]
    assert max(Counter(row.request_id for row in rows).values()) == 1  # settled once each
    assert len(rows) == calls == 2 * HELD
    lapsed = [row for row in rows if row.unreconciled]
    assert len(lapsed) == HELD
    assert all(row.output_tokens == MAX_TOKENS for row in lapsed)  # charged the worst case
    assert [(s[2], s[3]) for s in states] == [(sum(r.cost_nanos for r in rows), 0)]


RATE = 40  # requests a minute for the key, across every replica
RATE_REQUESTS = 200


@pytest.mark.parametrize("kind", KINDS)
def test_a_rate_limit_holds_across_three_replicas(tmp_path: Path, kind: str) -> None:
    """200 requests at once over three replicas against 40/minute: exactly 40 admitted.
    The bound (docs/scaling.md): never more than the limit in any window, whichever
    replica decides; the only error is extra strictness of at most one bucket."""

    def edit(data: dict[str, Any]) -> None:
        data["limits"] = [{"name": "per-key", "scope": "key", "requests": f"{RATE}/minute"}]

    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, "gateways-3", edit) as running:
            key = create_key_direct(running.config, name="rated", team="ml")
            statuses = asyncio.run(fire(running.urls, key.secret, RATE_REQUESTS))
        calls = len(sim.records)

    assert set(statuses) <= {200, 429}, statuses
    # the run takes a few seconds, far less than one window: every admission still counts
    assert statuses[200] == calls == RATE
    assert statuses[429] == RATE_REQUESTS - RATE
