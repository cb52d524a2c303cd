"""Two gateways on separate ports sharing the stores, while one store goes away under load
and comes back (docs/storage.md, "Outage policy"; docs/scaling.md).

* **Redis restarted** (a redis-server of the test's own on a free port, append-only file
  fsynced on every write, SIGKILLed and started again on the same port; keys and ledger on
  a throwaway PostgreSQL database): while it is down both gateways answer callers with a
  503 ``storage_unavailable`` in their own dialect (OpenAI and Anthropic), nothing reaches
  the provider unrecorded, and ``/readyz`` names the failing store (``counters``) and not
  the other; once it is back both recover by themselves.
* **PostgreSQL stopped and restarted** (a throwaway server from the installed binaries,
  fast shutdown while requests flow, counters in PostgreSQL too): both gateways refuse
  with 503 while it is down and ``/readyz`` names ``storage``; rows of requests already
  answering wait in each gateway's spool and are written once it is back.

In both, at the end, every upstream call has exactly one ledger row (none lost, none
doubled), and the budget's counters hold exactly what the ledger says, nothing reserved.
Driven by counts and states (bounded polls), never by a delay.
"""

from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from e2e.process import create_key_direct
from e2e.test_multinode import Fleet
from e2e.workers_world import Stores, budget_states, read_rows, throwaway_stores

sys.path.insert(0, str(Path(__file__).parents[1] / "storage"))

from pg_server import ThrowawayServer

from polling import until
from slow_stream import SlowStream
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

PROMPT = [{"role": "user", "content": "hello"}]


class own_redis:
    """A throwaway redis-server on a free port (append-only file fsynced on every write, so
    a SIGKILL loses no acknowledged write); never the shared one."""

    def __init__(self, where: Path) -> None:
        self.where = where
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port: int = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> int:
        self.process = subprocess.Popen(
            [
                *("redis-server", "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--dir", str(self.where), "--save", "", "--appendonly", "yes"),
                *("--appendfsync", "always"),
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self.port
            except OSError:
                assert self.process.poll() is None, "redis-server did not start"
                assert time.monotonic() < deadline, "redis-server never listened"
                time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def readyz(url: str) -> tuple[int, Any]:
    response = httpx2.get(url + "/readyz", timeout=10)
    return response.status_code, response.json()


def answers(url: str, status: int) -> Callable[[], bool]:
    return lambda: readyz(url)[0] == status


class Load(threading.Thread):
    """Budgeted requests one after another to one gateway until stopped, by status."""

    def __init__(self, url: str, secret: str) -> None:
        super().__init__(daemon=True)
        self.url, self.secret = url, secret
        self.statuses: Counter[int] = Counter()
        self.unexpected: list[BaseException] = []  # anything but an answer or a 503
        self.stopping = threading.Event()

    def run(self) -> None:
        with openai.OpenAI(base_url=self.url + "/v1", api_key=self.secret, max_retries=0) as sdk:
            while not self.stopping.is_set():
                try:
                    sdk.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
                    self.statuses[200] += 1
                except openai.APIStatusError as error:
                    body = error.body if isinstance(error.body, dict) else {}
                    if error.status_code != 503 or body.get("code") != "storage_unavailable":
                        self.unexpected.append(error)
                    self.statuses[503] += 1
                except Exception as error:
                    self.unexpected.append(error)


def spooled(folder: Path) -> int:
    """Rows waiting in the spool of the gateway whose config is in ``folder``."""
    spool = folder / "spendgate.spool"
    return sum(len(f.read_bytes().splitlines()) for f in spool.glob("*.jsonl"))


def served(loads: list[Load]) -> int:
    return sum(load.statuses[200] for load in loads)


def refused_in_each_dialect(url: str, secret: str, sim: SimulatorThread) -> None:
    before = len(sim.records)
    with openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
        assert caught.value.status_code == 503
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "storage_unavailable"
    with anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0) as messages:
        with pytest.raises(anthropic.APIStatusError) as refused:
            messages.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
        assert refused.value.status_code == 503
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["error"]["type"] == "overloaded_error"
    assert len(sim.records) == before, "a request reached the provider unrecorded"


def settle_and_check(running: Fleet, stores: Stores, sim: SimulatorThread) -> None:
    """Every upstream call has one row, and the counters equal the ledger (nothing held)."""

    def every_call_has_one_row() -> bool:
        rows = read_rows(stores)
        per_call = Counter(r.upstream_request_id for r in rows if r.upstream_request_id)
        assert all(count == 1 for count in per_call.values()), per_call  # never doubled
        return all(per_call[record.request_id] == 1 for record in list(sim.records))

    until(every_call_has_one_row, "one ledger row per provider call (the spools written)")

    seen: list[object] = []

    def counters_match_the_ledger() -> bool:
        states = budget_states(running.config)
        charged = sum(row.cost_nanos for row in read_rows(stores) if row.team == "ml")
        seen[:] = [[(s[2], s[3]) for s in states], charged]
        return [(s[2], s[3]) for s in states] == [(charged, 0)]

    until(
        counters_match_the_ledger,
        "counters equal the ledger, nothing reserved: last seen [(spent, reserved)], charged",
        limit_s=90.0,  # a lease the outage left must lapse and be swept by a live gateway
        explain=lambda: seen,
    )
    rows = read_rows(stores)
    assert len(rows) == len(sim.records)  # and no row for a request that never went out
    assert max(Counter(row.request_id for row in rows).values()) == 1


def budgeted(lease_ttl_s: int) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["budget_settings"] = {"lease_ttl_s": lease_ttl_s}
        data["budgets"] = [{"name": "ml-daily", "scope": "team", "match": "ml", "limit_usd": "50"}]

    return edit


def test_redis_restarted_mid_load_across_two_gateways(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = own_redis(data_dir)
    port = server.start()
    loads: list[Load] = []
    try:
        with (
            throwaway_stores("redis-pg", tmp_path, redis=f"redis://127.0.0.1:{port}/0") as made,
            SimulatorThread() as sim,
        ):
            assert made.counters_url is not None
            stores = dataclasses.replace(
                made,
                counters_url=made.counters_url + "&socket_timeout=0.5&socket_connect_timeout=0.5",
            )
            running = Fleet(tmp_path, sim.url, stores, "gateways-2", budgeted(2))
            try:
                secret = create_key_direct(running.config, name="budgeted", team="ml").secret
                loads = [Load(url, secret) for url in running.urls]
                for load in loads:
                    load.start()
                until(lambda: all(load.statuses[200] >= 5 for load in loads), "served via Redis")

                server.kill()
                for url in running.urls:
                    until(answers(url, 503), "/readyz reports the outage")
                    _status, body = readyz(url)
                    assert body["status"] == "storage unavailable"
                    assert body["stores"] == {"storage": "ok", "counters": "unavailable"}
                    refused_in_each_dialect(url, secret, sim)
                before = [load.statuses[200] for load in loads]

                server.start()  # same port: the append-only file brings the counters back
                for url in running.urls:
                    until(answers(url, 200), "/readyz recovers")
                    assert readyz(url)[1]["stores"] == {"storage": "ok", "counters": "ok"}
                until(
                    lambda: all(
                        load.statuses[200] >= b + 5 for load, b in zip(loads, before, strict=True)
                    ),
                    "requests flow again through both gateways",
                )
                for load in loads:
                    load.stopping.set()
                    load.join(30)
                assert [error for load in loads for error in load.unexpected] == []
                assert sum(load.statuses[503] for load in loads) >= 1  # the outage was seen
                settle_and_check(running, stores, sim)
                assert running.stop() == [0, 0]
            finally:
                for load in loads:
                    load.stopping.set()
                running.stop()
    finally:
        server.kill()


def test_postgres_stopped_and_restarted_mid_load_across_two_gateways(tmp_path: Path) -> None:
    loads: list[Load] = []
    with (
        ThrowawayServer() as server,
        throwaway_stores("postgres", tmp_path, pg_port=server.port) as stores,
        SimulatorThread() as sim,
    ):
        # lease upkeep every second (a quarter lease): what the outage left reserved is
        # given back within the test's bounds
        running = Fleet(tmp_path, sim.url, stores, "gateways-2", budgeted(4))
        try:
            secret = create_key_direct(running.config, name="budgeted", team="ml").secret
            loads = [Load(url, secret) for url in running.urls for _ in range(2)]
            for load in loads:
                load.start()
            until(lambda: served(loads) >= 30, "requests served before the outage")
            in_flight = SlowStream(running.urls[0] + "/v1", secret)
            in_flight.start()
            assert in_flight.first.wait(10)

            server.stop()
            for url in running.urls:
                until(answers(url, 503), "/readyz reports the outage")
                assert readyz(url)[1]["stores"]["storage"] == "unavailable"
            until(
                lambda: sum(load.statuses[503] for load in loads) >= 10,
                "requests refused while the server is down",
            )
            in_flight.join(30)
            assert in_flight.error is None
            assert in_flight.text  # the answer was not cut by the outage
            until(lambda: spooled(tmp_path / "gw0") >= 1, "the stream's row waits in the spool")

            server.start()
            for url in running.urls:
                until(answers(url, 200), "ready again")
            after = served(loads)
            until(lambda: served(loads) >= after + 30, "requests served after the outage")
            for load in loads:
                load.stopping.set()
                load.join(30)
            assert [error for load in loads for error in load.unexpected] == []
            settle_and_check(running, stores, sim)
            until(lambda: spooled(tmp_path / "gw0") == 0, "the spool written")
            assert len(sim.records) >= 60
            assert running.stop() == [0, 0]
        finally:
            for load in loads:
                load.stopping.set()
            running.stop()
