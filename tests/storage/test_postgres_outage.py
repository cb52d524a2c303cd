"""A PostgreSQL outage under load goes through the outage policy: the server (a throwaway
one of this test's) is stopped while requests flow and started again. While it is down,
callers get a 503 and ``/readyz`` says so; a request already answering finishes and its row
waits in the spool; once it is back, the spool is written and requests flow again. In the
end every provider call has exactly one ledger row (none lost, none doubled) and nothing
stays reserved."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from pg_server import ThrowawayServer

from harness import GatewayHarness
from polling import until
from slow_stream import SlowStream

PROMPT = [{"role": "user", "content": "hello"}]
BUDGETED_TEAM = "ml"


def held(gw: GatewayHarness) -> object:
    """The reservations still held, and the ledger rows of their requests (diagnostics)."""
    storage = gw.gateway.storage
    lapsed = gw.call(storage.counter_store.lapsed(datetime(2100, 1, 1, tzinfo=UTC), 100))
    rows = {
        item.reservation_id: gw.call(storage.ledger_store.row(item.reservation_id))
        for item in lapsed
    }
    return {"held": [(i.reservation_id, i.counters) for i in lapsed], "rows": rows}


def ready(gw: GatewayHarness) -> int:
    return httpx2.get(gw.url + "/readyz").status_code


class Load(threading.Thread):
    """Requests one after another from one caller, counting answers by status."""

    def __init__(self, gw: GatewayHarness, secret: str) -> None:
        super().__init__(daemon=True)
        self.gw, self.secret = gw, secret
        self.statuses: Counter[int] = Counter()
        self.unexpected: list[BaseException] = []  # anything but an answer or a 503
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.gw.sdk_client("openai", self.secret, max_retries=0) as client:
            while not self.stopping.is_set():
                try:
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=PROMPT, max_tokens=5
                    )
                    self.statuses[200] += 1
                except openai.APIStatusError as error:
                    body = error.body if isinstance(error.body, dict) else {}
                    if error.status_code != 503 or body.get("code") != "storage_unavailable":
                        self.unexpected.append(error)
                    self.statuses[503] += 1
                except Exception as error:
                    self.unexpected.append(error)


def reserved(gw: GatewayHarness) -> int:
    views = gw.call(gw.gateway.budget_service.overview())
    return sum(view.state.reserved for view in views)


def served(loads: list[Load]) -> int:
    return sum(load.statuses[200] for load in loads)


def refused(loads: list[Load]) -> int:
    return sum(load.statuses[503] for load in loads)


@pytest.mark.slow
def test_postgres_stopped_and_restarted_mid_load(tmp_path: Path) -> None:
    with ThrowawayServer() as server:
        url = server.database()

        def configure(data: dict[str, Any]) -> None:
            data["storage"] = {"url": url, "spool_dir": str(tmp_path / "spool")}
            # Lease upkeep every second (a quarter lease), so that what the outage left
            # reserved is given back within the test's bounds.
            data["budget_settings"] = {"lease_ttl_s": 4}
            data["budgets"] = [
                {"name": "ml-daily", "scope": "team", "match": BUDGETED_TEAM, "limit_usd": "50"}
            ]

        gw = GatewayHarness(tmp_path / "unused.db", configure=configure).start()
        loads: list[Load] = []
        try:
            plain = gw.create_key(name="plain", team="web")
            budgeted = gw.create_key(name="budgeted", team=BUDGETED_TEAM)
            loads = [Load(gw, secret) for secret in (plain, budgeted, budgeted)]
            for load in loads:
                load.start()
            until(lambda: served(loads) >= 30, "requests served before the outage")
            in_flight = SlowStream(gw.openai_base_url, budgeted)
            in_flight.start()
            assert in_flight.first.wait(10)

            server.stop()
            until(lambda: ready(gw) == 503, "/readyz says storage is unavailable")
            until(lambda: refused(loads) >= 10, "requests refused while the server is down")
            in_flight.join(30)
            assert in_flight.error is None
            assert in_flight.text
            until(lambda: len(gw.gateway.spool) >= 1, "the stream's row waits in the spool")

            server.start()
            until(lambda: ready(gw) == 200, "ready again")
            after = served(loads)
            until(lambda: served(loads) >= after + 30, "requests served after the outage")
            for load in loads:
                load.stopping.set()
                load.join(30)
            until(lambda: len(gw.gateway.spool) == 0, "the spool written")
            assert [error for load in loads for error in load.unexpected] == []

            # A reservation whose COMMIT went through as the connection broke (the caller
            # was refused) is given back at the next lease renewal: never charged.
            until(lambda: reserved(gw) == 0, "nothing reserved", explain=lambda: held(gw))

            rows = gw.ledger()
            per_call = Counter(row.upstream_request_id for row in rows if row.upstream_request_id)
            calls = list(gw.sim.records)
            assert len(calls) >= 60
            for record in calls:
                assert per_call[record.request_id] == 1, record.to_json()
            assert all(count == 1 for count in per_call.values())
            assert len(rows) == len(calls)  # and no row for a request that never went out
        finally:
            for load in loads:
                load.stopping.set()
            gw.stop()
