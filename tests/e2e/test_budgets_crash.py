"""``kill -9`` with budgeted requests in flight: after a restart nothing stays reserved.

A real ``spendgate serve`` child runs with three budgets (per key, per team in dollars,
per team in tokens) and a 1 s reservation lease. A few requests complete; then several
more are held in flight by the simulator (``x-sim-delay-ms``): their reservations are
made, their upstream answers have not come. SIGKILL. A new gateway on the same database
must, within a few seconds, settle the lapsed leases: reserved 0 on every counter, each
in-flight request one ledger row flagged ``unreconciled`` and charged its whole
reservation (the worst case), the completed requests untouched.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from e2e.process import GatewayProcess, create_key_direct, read_ledger, spendgate_cli, write_config
from spendgate.config import load_config
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.gateway import build_gateway
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

IN_FLIGHT = 6
COMPLETED = 4
HELD_MS = 4000  # the simulator holds in-flight requests this long before answering
PROMPT = [{"role": "user", "content": "Please answer after a long think."}]
MAX_TOKENS = 200


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "crash-key", "scope": "key", "limit_usd": "1", "period": "daily"},
        {"name": "crash-team", "scope": "team", "match": "ml", "limit_usd": "5", "period": "daily"},
        {
            "name": "crash-tokens",
            "scope": "team",
            "match": "ml",
            "limit_tokens": 1_000_000,
            "period": "monthly",
        },
    ]
    data["budget_settings"] = {"lease_ttl_s": 1}


def send(kind: str, url: str, secret: str, headers: dict[str, str]) -> Any:
    if kind == "messages":
        with anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0, timeout=15) as ant:
            return ant.messages.create(
                model="claude-haiku-4-5",
                max_tokens=MAX_TOKENS,
                messages=PROMPT,
                extra_headers=headers,
            )
    with openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=15) as oai:
        if kind == "chat-stream":
            return list(
                oai.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=PROMPT,
                    max_tokens=MAX_TOKENS,
                    stream=True,
                    extra_headers=headers,
                )
            )
        return oai.chat.completions.create(
            model="gpt-4o-mini", messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=headers
        )


KINDS = ("chat", "chat-stream", "messages")


def worst_nanos(config_path: Path, model: str, surface: str) -> int:
    """The whole reservation of one of these requests, priced as the gateway prices it:
    its budgets have room, so by the body's byte bound (docs/budgets.md, "The worst case
    priced before the call"), which a lapsed reservation is charged."""
    gateway = build_gateway(load_config(config_path), env={}, require_secrets=False)
    route = gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    body = {"model": model, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    counter = tokens.count_anthropic_input if surface == "anthropic.messages" else None
    with counting_with(BYTE_BOUND):
        count = (counter or tokens.count_chat_input)(model, body)
    cache = surface != "anthropic.messages"  # Anthropic writes its cache only where asked
    worst = worst_case(
        route.price,
        input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
        input_exact=count.exact,
        ceiling=MAX_TOKENS,
        choices=1,
        cache_write=cache,
        cache_write_1h=cache,
    )
    return worst.amount(Unit.NANOS, MAX_TOKENS)


def counters(db_path: Path) -> list[tuple[str, str, str, int, int]]:
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        rows = conn.execute(
            "SELECT budget, member, unit, spent, reserved FROM budget_counters"
        ).fetchall()
        leases = conn.execute("SELECT COUNT(*) FROM reservations").fetchone()[0]
    finally:
        conn.close()
    return [*rows, ("reservations", "", "", leases, 0)]


def test_kill_9_with_reservations_in_flight_settles_them_after_restart(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=configure)
        db_path = tmp_path / "spendgate.db"
        done_key = create_key_direct(config, name="done", team="ml")
        held_key = create_key_direct(config, name="held", team="ml")

        threads: list[threading.Thread] = []
        gateway = GatewayProcess(config).start()
        try:
            completed = [
                send(KINDS[i % 3], gateway.url, done_key.secret, {"x-sim-output-tokens": "50"})
                for i in range(COMPLETED)
            ]
            errors: list[BaseException] = []

            def held(i: int) -> None:
                try:
                    send(
                        KINDS[i % 3], gateway.url, held_key.secret, {"x-sim-delay-ms": str(HELD_MS)}
                    )
                except (openai.APIConnectionError, anthropic.APIConnectionError) as exc:
                    errors.append(exc)

            threads += [threading.Thread(target=held, args=(i,)) for i in range(IN_FLIGHT)]
            for thread in threads:
                thread.start()
            # every held request has reached the upstream: its reservation is made
            assert sim.wait_until(
                lambda records: sum(1 for r in records if not r.finished) == IN_FLIGHT, 10
            )
            reserved = sum(row[4] for row in counters(db_path))
            assert reserved > 0
            assert gateway.kill9() == -9
        finally:
            gateway.stop()
            for thread in threads:
                thread.join(20)
        killed_at = time.monotonic()
        assert len(errors) == IN_FLIGHT, "a held request did not fail with the gateway"
        assert len(completed) == COMPLETED

        before = read_ledger(db_path)
        assert len(before) == COMPLETED  # the in-flight ones have no row yet

        with GatewayProcess(config) as again:
            deadline = time.monotonic() + 10
            while any(row[4] for row in counters(db_path)) and time.monotonic() < deadline:
                time.sleep(0.05)
            settled_after = time.monotonic() - killed_at
            assert again.stop() == 0
        print(f"\nlapsed reservations settled {settled_after:.2f}s after the kill")
        assert settled_after < 6

        state = counters(db_path)
        assert all(row[4] == 0 for row in state), state  # reserved, and no lease left
        assert state[-1][3] == 0

        rows = read_ledger(db_path)
        assert max(Counter(row.request_id for row in rows).values()) == 1
        done = [row for row in rows if row.key_id == done_key.key.id]
        lapsed = [row for row in rows if row.key_id == held_key.key.id]
        assert {row.request_id for row in done} == {row.request_id for row in before}
        for row in done:
            assert not row.unreconciled
            assert row.error is None
            assert row.status == 200
            assert row.output_tokens == 50
        assert len(lapsed) == IN_FLIGHT
        for row in lapsed:
            assert row.unreconciled
            assert row.usage_estimated
            assert row.output_ceiling == MAX_TOKENS
            assert row.output_tokens == MAX_TOKENS
            assert row.cost_nanos == worst_nanos(config, row.requested_model, row.surface)
            assert "charged at its reservation" in (row.error or "")
        assert {row.surface for row in lapsed} == {"openai.chat", "anthropic.messages"}
        streamed = sum(1 for i in range(IN_FLIGHT) if KINDS[i % 3] == "chat-stream")
        assert sum(row.streamed for row in lapsed) == streamed

        # the CLI, on the same database, agrees: spent is the ledger, nothing reserved
        shown = spendgate_cli("budgets", "-c", str(config), "--json")
        assert shown.returncode == 0, shown.stderr
        views = {(v["name"], v["member"]): v for v in json.loads(shown.stdout)}
        total = sum(row.cost_nanos for row in rows)
        total_tokens = sum(row.input_tokens + row.output_tokens for row in rows)
        assert views[("crash-team", "ml")]["spent"] == total
        assert views[("crash-tokens", "ml")]["spent"] == total_tokens
        assert views[("crash-key", held_key.key.id)]["spent"] == sum(r.cost_nanos for r in lapsed)
        assert views[("crash-key", done_key.key.id)]["spent"] == sum(r.cost_nanos for r in done)
        assert all(v["reserved"] == 0 for v in views.values())
        assert len(views) == 4


def test_kill_9_after_the_answer_before_its_row_charges_the_worst_case(tmp_path: Path) -> None:
    """A budgeted request is answered before its ledger row is committed (its lease holds
    the worst case meanwhile). Kill the gateway in that instant, made long here by another
    process holding the database's write lock: the client has its whole answer, and after
    a restart the request is charged its reservation, flagged ``unreconciled``, once."""
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=configure)
        db_path = tmp_path / "spendgate.db"
        key = create_key_direct(config, name="answered", team="ml")
        result: list[Any] = []
        gateway = GatewayProcess(config).start()
        blocker = sqlite3.connect(db_path, isolation_level=None, timeout=10)
        try:
            caller = threading.Thread(
                target=lambda: result.append(
                    send("chat", gateway.url, key.secret, {"x-sim-delay-ms": "600"})
                )
            )
            caller.start()
            assert sim.wait_until(lambda records: len(records) == 1, 10)  # reserved, upstream
            blocker.execute("BEGIN IMMEDIATE")  # the row cannot commit now
            caller.join(10)
            assert not caller.is_alive()
            [answer] = result
            assert answer.choices[0].message.content  # the client has its whole answer
            assert counters(db_path)[-1][3] == 1  # its lease is still there
            assert gateway.kill9() == -9
        finally:
            if blocker.in_transaction:
                blocker.execute("ROLLBACK")
            blocker.close()
            gateway.stop()
        assert read_ledger(db_path) == []  # the row never landed

        with GatewayProcess(config) as again:
            deadline = time.monotonic() + 10
            while any(row[4] for row in counters(db_path)) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert again.stop() == 0
        [row] = read_ledger(db_path)
        assert row.unreconciled
        assert row.key_id == key.key.id
        assert row.cost_nanos == worst_nanos(config, "gpt-4o-mini", "openai.chat")
        assert all(r[4] == 0 for r in counters(db_path))
