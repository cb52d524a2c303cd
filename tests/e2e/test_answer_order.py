"""Which comes first, the client's last byte or the request's ledger row
(`spendgate.pipeline.outcome.answer_and_record`).

A request that holds a reservation is answered first: its lease, committed before the
call, keeps its worst case on the budget until the row settles it, so the client does not
wait for that commit. A request without a reservation writes its row first: the row is
its only durable trace. Either way, what this process reports afterwards (admin reads, the
harness's reads) includes every request already answered (`Gateway.settled`).

To see the order, the test holds the SQLite writer's lock while the upstream answers, as
a long checkpoint would: the row cannot commit until it is released.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from e2e.process import http_request
from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.domain.tokens import TokenCount
from spendgate.pipeline.worst_case import input_upper_bound

ADMIN = "sg-admin-answer-order"
MODEL = "gpt-4o-mini"
SAY_HELLO = [{"role": "user", "content": "Say hello."}]


def _counts(messages: list[dict[str, str]]) -> tuple[TokenCount, TokenCount]:
    """The body's input as counted, and as its byte bound."""
    body = {"model": MODEL, "messages": messages}
    with counting_with(BYTE_BOUND):
        bound = tokens.count_chat_input(MODEL, body)
    return tokens.count_chat_input(MODEL, body), bound


HELD_MS = "400"  # the upstream holds each answer this long: time to take the lock


def configure(config: dict[str, Any]) -> None:
    config["budgets"] = [
        {"name": "order", "scope": "user", "match": "u-budgeted", "limit_usd": "10"},
        # 143-154 tokens reserved per request below, ~15 used: three fit one after the
        # other only if each finds the one before it settled, not still reserved
        {"name": "sequence", "scope": "user", "match": "u-seq", "limit_tokens": 200},
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("order") / "spend.db",
        configure=configure,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    yield harness
    harness.stop()


def _rows_on_disk(gw: GatewayHarness, key_id: str) -> int:
    """Ledger rows committed for the key, read by another connection (no barrier)."""
    with closing(sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True)) as conn:
        (count,) = conn.execute(
            "SELECT COUNT(*) FROM ledger WHERE key_id = ?", (key_id,)
        ).fetchone()
    return int(count)


def _reserved_on_disk(gw: GatewayHarness) -> int:
    with closing(sqlite3.connect(f"file:{gw.db_path}?mode=ro", uri=True)) as conn:
        (total,) = conn.execute(
            "SELECT COALESCE(SUM(reserved), 0) FROM budget_counters WHERE budget = 'order'"
        ).fetchone()
    return int(total)


class _Call(threading.Thread):
    """One chat completion through the real SDK, in a thread of its own."""

    def __init__(self, gw: GatewayHarness, secret: str) -> None:
        super().__init__(daemon=True)
        self.client = gw.sdk_client("openai", secret, max_retries=0)
        self.status: int | None = None
        self.text: str | None = None

    def run(self) -> None:
        with self.client:
            raw = self.client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say hello."}],
                max_tokens=20,
                extra_headers={"x-sim-delay-ms": HELD_MS, "x-sim-output-tokens": "5"},
            )
        self.status = raw.http_response.status_code
        self.text = raw.parse().choices[0].message.content


def _start_held(gw: GatewayHarness, secret: str) -> _Call:
    """Start a call, wait until the upstream holds it (admitted, reservation committed)."""
    gw.sim.clear()
    call = _Call(gw, secret)
    call.start()
    assert gw.call(gw.sim.wait_until(lambda records: len(records) == 1, 5))
    return call


def test_a_budgeted_answer_does_not_wait_for_its_row(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="budgeted", user="u-budgeted")
    key_id = gw.last_key_id
    writer = gw.gateway.storage._require().writer  # type: ignore[attr-defined]
    call = _start_held(gw, secret)
    with writer._lock:  # the row cannot commit meanwhile
        call.join(5)
        assert not call.is_alive(), "the client waited for the ledger commit"
        assert call.status == 200
        assert call.text
        assert _rows_on_disk(gw, key_id) == 0  # answered, not yet written...
        assert _reserved_on_disk(gw) > 0  # ...and its lease still holds the worst case
    # Reads through the gateway wait for the row (the harness's `call` runs `settled`).
    rows = gw.ledger(key_id)
    assert [(row.status, row.output_tokens) for row in rows] == [(200, 5)]
    assert rows[0].cost_nanos > 0
    assert _reserved_on_disk(gw) == 0
    assert gw.call(_budget_spent(gw)) == rows[0].cost_nanos


def test_an_unbudgeted_answer_waits_for_its_row(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="plain", user="u-plain")
    key_id = gw.last_key_id
    writer = gw.gateway.storage._require().writer  # type: ignore[attr-defined]
    call = _start_held(gw, secret)
    with writer._lock:
        call.join(1.5)  # the upstream answered after 0.4 s; the row cannot commit
        assert call.is_alive(), "an unbudgeted answer went out before its row"
        assert _rows_on_disk(gw, key_id) == 0
    call.join(5)
    assert not call.is_alive()
    assert call.status == 200
    assert _rows_on_disk(gw, key_id) == 1


def test_the_next_request_finds_the_previous_one_settled(gw: GatewayHarness) -> None:
    """The row of an answered request is placed in the storage's write order before any
    request that arrives after the answer, even on a new connection: a client's next
    request is decided on what the previous one really used, not on its worst case."""
    secret = gw.create_key(name="sequence", user="u-seq")
    used = []
    remaining = []
    for _ in range(3):
        with gw.sdk_client("openai", secret, max_retries=0) as client:  # a new connection
            raw = client.chat.completions.with_raw_response.create(
                model=MODEL,
                messages=SAY_HELLO,
                max_tokens=100,
                extra_headers={"x-sim-output-tokens": "5"},
            )
        assert raw.http_response.status_code == 200
        assert "x-spendgate-output-clamped" not in raw.http_response.headers
        remaining.append(int(raw.http_response.headers["x-spendgate-budget-remaining"].split()[0]))
        usage = raw.parse().usage
        used.append(usage.prompt_tokens + usage.completion_tokens)
    # What one request reserves, its worst case: its body's byte bound where that fits
    # whole, else its exact count (the bound would pass one of the budget's default soft
    # thresholds: docs/budgets.md).
    worst = {input_upper_bound(count.tokens, None) + 100 for count in _counts(SAY_HELLO)}
    assert len(worst) == 2
    for reserved in worst:  # the test's premise, with either
        assert 2 * used[0] + reserved <= 200 < used[0] + 2 * reserved
    assert remaining[0] == 200 - max(worst)  # room to spare: the bound
    # each found the ones before it charged what they used, nothing left reserved
    for i in range(3):
        assert 200 - remaining[i] - sum(used[:i]) in worst


def test_admin_reads_include_every_answered_request(gw: GatewayHarness) -> None:
    """The admin API waits for rows still being written before it reports."""
    secret = gw.create_key(name="admin-read", user="u-budgeted")
    writer = gw.gateway.storage._require().writer  # type: ignore[attr-defined]
    before = gw.call(_budget_spent(gw))
    call = _start_held(gw, secret)
    with writer._lock:
        call.join(5)
        assert call.status == 200
        reader = _AdminRead(gw)
        reader.start()
        reader.join(0.5)
        assert reader.is_alive(), "the admin read answered before the row was written"
    reader.join(5)
    assert reader.spent is not None
    assert reader.spent > before


class _AdminRead(threading.Thread):
    """``GET /admin/budgets`` in a thread of its own: the budget's spend it reports."""

    def __init__(self, gw: GatewayHarness) -> None:
        super().__init__(daemon=True)
        self.gw = gw
        self.spent: int | None = None

    def run(self) -> None:
        result = http_request("GET", self.gw.url + "/admin/budgets", token=ADMIN, timeout=10)
        assert result.status == 200, result.body
        self.spent = sum(v["spent"] for v in result.json()["data"] if v["name"] == "order")


async def _budget_spent(gw: GatewayHarness) -> int:
    views = await gw.gateway.budget_service.overview("order")
    return sum(view.state.spent for view in views)


def test_shutdown_waits_for_the_rows_of_answered_requests(tmp_path: Path) -> None:
    """A budgeted request answered just before shutdown still gets its row (not a lapse)."""

    harness = GatewayHarness(tmp_path / "spend.db", configure=configure).start()
    secret = harness.create_key(name="last", user="u-budgeted")
    key_id = harness.last_key_id
    writer = harness.gateway.storage._require().writer  # type: ignore[attr-defined]
    call = _start_held(harness, secret)
    stopper = threading.Thread(target=harness.stop, daemon=True)
    with writer._lock:
        call.join(5)
        assert call.status == 200
        stopper.start()
        stopper.join(0.5)
        assert stopper.is_alive(), "the gateway stopped with an answered request's row unwritten"
    stopper.join(10)
    assert not stopper.is_alive()
    assert _rows_on_disk(harness, key_id) == 1
    assert _reserved_on_disk(harness) == 0
