"""Circuit breakers shared by gateways on one set of stores (issue 16: breaker state with the
live counters): the failures two replicas see count together, and once one opens the
breaker of a key and model, the other refuses that pair too, without an upstream call.

Two ``spendgate serve`` processes on separate ports, the stores SQLite (one file),
PostgreSQL, or Redis + PostgreSQL (`e2e.workers_world.throwaway_stores`); the simulator
fails every request sent with ``x-sim-status: 500``. Driven by counts; the one wait is a
bounded poll for the second replica's breaker state (each process reads the stored
breakers every second).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from e2e.process import ADMIN_TOKEN, HttpResult, create_key_direct, http_request
from e2e.test_multinode import KINDS, fleet
from e2e.workers_world import read_rows, throwaway_stores
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

CHAT = "gpt-4o-mini"
BODY = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}


def breakers(data: dict[str, Any]) -> None:
    data["runaway"] = {"breaker_failures": 3, "breaker_cooldown_s": 600}


def send(url: str, secret: str, **headers: str) -> HttpResult:
    return http_request(
        "POST", f"{url}/v1/chat/completions", body=BODY, token=secret, headers=headers
    )


def open_breakers(url: str) -> float:
    text = http_request("GET", f"{url}/metrics", token=ADMIN_TOKEN).body.decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "spendgate_breakers_open" and sample.labels.get("state") == "open"
    )


@pytest.mark.parametrize("kind", KINDS)
def test_failures_on_two_replicas_open_one_breaker_for_both(tmp_path: Path, kind: str) -> None:
    with throwaway_stores(kind, tmp_path) as stores, SimulatorThread() as sim:
        with fleet(tmp_path, sim.url, stores, "gateways-2", breakers) as running:
            a, b = running.urls
            secret = create_key_direct(running.config, name="flaky", team="ml").secret
            other = create_key_direct(running.config, name="steady", team="ml").secret
            # three failures in a row, two on one replica and one on the other
            for url in (a, b, a):
                assert send(url, secret, **{"x-sim-status": "500"}).status == 500
            assert len(sim.records) == 3
            deadline = time.monotonic() + 30
            while open_breakers(b) < 1:  # b reads the stored breakers every second
                assert time.monotonic() < deadline, "replica b never saw the breaker open"
                time.sleep(0.05)
            refused = [send(url, secret) for url in (a, b) * 3]
            assert [r.status for r in refused] == [503] * 6
            assert {r.json()["error"]["code"] for r in refused} == {"circuit_open"}
            assert {r.headers["x-should-retry"] for r in refused} == {"false"}
            assert len(sim.records) == 3  # failed fast on both: no upstream call
            assert send(b, other).status == 200  # another key's pair is not affected
            assert running.stop() == [0, 0]
        rows = read_rows(stores)
    assert sorted(r.status for r in rows if r.blocked_by is None) == [200, 500, 500, 500]
    assert [r.blocked_by for r in rows if r.blocked_by is not None] == ["circuit-breaker"] * 6
