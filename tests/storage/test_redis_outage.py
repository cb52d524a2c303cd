"""Redis restarted under load: the gateway follows the outage policy while it is down and
recovers by itself once it is back (docs/storage.md, "Outage policy").

A redis-server of this test's own on a free port (the shared one is never stopped), with
its append-only file fsynced on every write, is killed (SIGKILL) while requests flow, then
started again on the same port. What must hold:

* while it is down, callers get a 503 ``storage_unavailable`` in their own dialect, nothing
  reaches the provider unrecorded, and ``/readyz`` says so;
* once it is back (its script cache empty: NOSCRIPT, loaded again) requests flow again,
  with nothing to restart in the gateway;
* every provider call has exactly one ledger row, and once leases have settled the
  budget's counter holds exactly what the ledger says: nothing reserved, nothing lost.
"""

from __future__ import annotations

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
from test_redis_counters import own_redis

from harness import GatewayHarness

PROMPT = [{"role": "user", "content": "hello"}]
ADMIN = "redis-outage-admin"


def until(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Poll ``check`` (a bound, not a timing: the test waits for a state, never a delay)."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def ready(gw: GatewayHarness) -> int:
    return httpx2.get(gw.url + "/readyz").status_code


class Load(threading.Thread):
    """Budgeted requests one after another until stopped; the status of each."""

    def __init__(self, gw: GatewayHarness, secret: str) -> None:
        super().__init__(daemon=True)
        self.gw, self.secret = gw, secret
        self.statuses: list[int] = []
        self.codes: Counter[str] = Counter()
        self.stopping = threading.Event()

    def run(self) -> None:
        with self.gw.sdk_client("openai", self.secret, max_retries=0) as client:
            while not self.stopping.is_set():
                try:
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=PROMPT, max_tokens=5
                    )
                    self.statuses.append(200)
                except openai.APIStatusError as exc:
                    self.statuses.append(exc.status_code)
                    body = exc.body if isinstance(exc.body, dict) else {}
                    self.codes[str(body.get("code"))] += 1


def refused_in_each_dialect(gw: GatewayHarness, secret: str) -> None:
    before = len(gw.sim.records)
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
        assert caught.value.status_code == 503
        assert isinstance(caught.value.body, dict)
        assert caught.value.body["code"] == "storage_unavailable"
    with gw.sdk_client("anthropic", secret, max_retries=0) as client:
        with pytest.raises(anthropic.APIStatusError) as refused:
            client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
        assert refused.value.status_code == 503
        assert isinstance(refused.value.body, dict)
        assert refused.value.body["error"]["type"] == "overloaded_error"
    assert len(gw.sim.records) == before, "a request reached the provider unrecorded"


def test_redis_restarted_mid_load(tmp_path: Path) -> None:
    data_dir = tmp_path / "redis"
    data_dir.mkdir()
    server = own_redis(data_dir)
    port = server.start()

    def configure(data: dict[str, Any]) -> None:
        data["storage"]["counters_url"] = (
            f"redis://127.0.0.1:{port}/0?prefix=outage"
            "&socket_timeout=0.5&socket_connect_timeout=0.5"
        )
        data["budget_settings"] = {"lease_ttl_s": 2}
        data["budgets"] = [{"name": "ml-daily", "scope": "team", "match": "ml", "limit_usd": "50"}]

    gw = GatewayHarness(
        tmp_path / "spendgate.db", configure=configure, env={"SPENDGATE_ADMIN_TOKEN": ADMIN}
    ).start()
    load: Load | None = None
    try:
        secret = gw.create_key(name="budgeted", team="ml")
        load = Load(gw, secret)
        load.start()
        until(lambda: load.statuses.count(200) >= 5, "requests served through Redis")

        server.kill()
        until(lambda: ready(gw) == 503, "/readyz reports the outage")
        refused_in_each_dialect(gw, secret)
        served_before = load.statuses.count(200)

        server.start()  # same port: the append-only file brings the counters back
        until(lambda: ready(gw) == 200, "/readyz recovers")
        until(lambda: load.statuses.count(200) >= served_before + 5, "requests flow again")
        load.stopping.set()
        load.join(timeout=30)

        assert set(load.statuses) <= {200, 503}, Counter(load.statuses)
        assert set(load.codes) <= {"storage_unavailable"}, load.codes

        def every_call_has_one_row() -> bool:
            # a row may still wait in the spool, or for its lease to lapse, for a moment
            rows = gw.ledger()
            per_call = Counter(r.upstream_request_id for r in rows if r.upstream_request_id)
            assert all(count == 1 for count in per_call.values()), per_call
            return all(per_call[record.request_id] == 1 for record in list(gw.sim.records))

        until(every_call_has_one_row, "one ledger row per provider call")

        def counters_match_the_ledger() -> bool:
            views = gw.call(gw.gateway.budget_service.overview())
            (view,) = [v for v in views if v.state.ref.budget.name == "ml-daily"]
            charged = sum(row.cost_nanos for row in gw.ledger() if row.team == "ml")
            return view.state.reserved == 0 and view.state.spent == charged

        until(counters_match_the_ledger, "counters equal the ledger")
    finally:
        if load is not None:
            load.stopping.set()
        try:
            gw.stop()
        finally:
            server.kill()
