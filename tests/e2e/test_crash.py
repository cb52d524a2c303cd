"""``kill -9`` under load loses no completed request.

The gateway runs as a real ``spendgate serve`` child process in front of the simulator
(with a small delay, so that requests are always in flight). A dozen client threads send
a mix of streaming and non-streaming OpenAI and Anthropic requests with the real SDKs
and note the ``x-spendgate-request-id`` of every response they saw COMPLETE: the whole
body read, or the stream read up to its terminal event (``[DONE]`` / ``message_stop``).
Then SIGKILL. The ordering rule (last byte only after the ledger row committed) says
every one of those ids has exactly one ledger row in the SQLite file.

A kill at a random moment rarely lands in the microseconds between a commit and the last
byte, so for the last half second before the kill the test holds SQLite's write lock from
a connection of its own: every commit waits, and with it (if the rule holds) every last
byte. A gateway that sent the last byte first would show completed requests without rows.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anthropic
import openai
import pytest

from e2e.process import (
    ADMIN_TOKEN,
    GatewayProcess,
    create_key,
    http_request,
    read_ledger,
    write_config,
)
from spendgate.simulator import SimulatorOptions
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

THREADS = 16
LOAD_S = 1.0  # free-running load before the ledger's commits are held back...
MIN_COMPLETED = 60  # ...and at least this many completed requests (up to MAX_LOAD_S)
MAX_LOAD_S = 6.0
HOLD_S = 0.5  # commits held back (another process holds SQLite's write lock), then kill
REQUEST_ID = "x-spendgate-request-id"


class Incomplete(Exception):
    """The response ended without its terminal event."""


@dataclass
class Outcome:
    completed: dict[str, str] = field(default_factory=dict)  # request id -> kind
    completed_at: list[float] = field(default_factory=list)
    started_only: list[str] = field(default_factory=list)  # headers seen, never completed
    errors: list[tuple[float, str, str]] = field(default_factory=list)  # (when, kind, error)


def _chat(oai: openai.OpenAI, ant: anthropic.Anthropic, prompt: str, out: Outcome) -> str:
    raw = oai.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}], max_tokens=40
    )
    request_id = raw.headers[REQUEST_ID]
    out.started_only.append(request_id)
    completion = raw.parse()  # the whole body, parsed
    assert completion.choices[0].message.content
    return request_id


def _chat_stream(oai: openai.OpenAI, ant: anthropic.Anthropic, prompt: str, out: Outcome) -> str:
    with oai.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": prompt}],
        max_tokens=40,
        stream=True,
    ) as response:
        request_id = response.headers[REQUEST_ID]
        out.started_only.append(request_id)
        done = False
        for line in response.iter_lines():
            done = done or line.strip() == "data: [DONE]"
    if not done:
        raise Incomplete(request_id)
    return request_id


def _messages(oai: openai.OpenAI, ant: anthropic.Anthropic, prompt: str, out: Outcome) -> str:
    raw = ant.messages.with_raw_response.create(
        model="claude-haiku-4-5", max_tokens=40, messages=[{"role": "user", "content": prompt}]
    )
    request_id = raw.headers[REQUEST_ID]
    out.started_only.append(request_id)
    message = raw.parse()
    assert message.stop_reason
    return request_id


def _messages_stream(
    oai: openai.OpenAI, ant: anthropic.Anthropic, prompt: str, out: Outcome
) -> str:
    with ant.messages.with_streaming_response.create(
        model="claude-haiku-4-5",
        max_tokens=40,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
    ) as response:
        request_id = response.headers[REQUEST_ID]
        out.started_only.append(request_id)
        done = False
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line.removeprefix("data:"))
                done = done or event.get("type") == "message_stop"
    if not done:
        raise Incomplete(request_id)
    return request_id


Send = Callable[[openai.OpenAI, anthropic.Anthropic, str, Outcome], str]
KINDS: dict[str, Send] = {
    "chat": _chat,
    "chat-stream": _chat_stream,
    "messages": _messages,
    "messages-stream": _messages_stream,
}
SURFACES = {
    "chat": ("openai.chat", False),
    "chat-stream": ("openai.chat", True),
    "messages": ("anthropic.messages", False),
    "messages-stream": ("anthropic.messages", True),
}


def _client_thread(index: int, url: str, secret: str, stop: threading.Event, out: Outcome) -> None:
    oai = openai.OpenAI(base_url=url + "/v1", api_key=secret, max_retries=0, timeout=10)
    ant = anthropic.Anthropic(base_url=url, api_key=secret, max_retries=0, timeout=10)
    names = list(KINDS)
    try:
        n = index
        while not stop.is_set():
            kind = names[n % len(names)]
            n += 1
            try:
                request_id = KINDS[kind](oai, ant, f"client {index} request {n}", out)
            except Exception as exc:
                # After the kill every request fails: stop at the first failure. One
                # before the kill is a bug, reported by the test.
                out.errors.append((time.monotonic(), kind, repr(exc)))
                return
            else:
                out.started_only.remove(request_id)
                out.completed[request_id] = kind
                out.completed_at.append(time.monotonic())
    finally:
        oai.close()
        ant.close()


def test_kill_9_under_load_loses_no_completed_request(tmp_path: Path) -> None:
    options = SimulatorOptions(first_byte_delay_ms=30, chunk_delay_ms=4)
    with SimulatorThread(options) as sim:
        config = write_config(tmp_path, sim.url)
        db_path = tmp_path / "spendgate.db"
        key = create_key(config, "--name", "load", "--team", "ml", "--service", "crash-test")
        assert key["key"].startswith("sk-sg-")

        gateway = GatewayProcess(config).start()
        stop = threading.Event()
        outcomes = [Outcome() for _ in range(THREADS)]
        threads = [
            threading.Thread(
                target=_client_thread, args=(i, gateway.url, key["key"], stop, outcomes[i])
            )
            for i in range(THREADS)
        ]
        try:
            began = time.monotonic()
            for thread in threads:
                thread.start()
            time.sleep(LOAD_S)
            while sum(len(o.completed) for o in outcomes) < MIN_COMPLETED:
                if time.monotonic() - began > MAX_LOAD_S:
                    break
                time.sleep(0.02)
            loaded_s = time.monotonic() - began
            blocker = sqlite3.connect(db_path, isolation_level=None)
            try:
                blocker.execute("BEGIN IMMEDIATE")  # the write lock: commits now wait
                held_at = time.monotonic()
                time.sleep(HOLD_S)
                killed_at = time.monotonic()
                assert gateway.kill9() == -9
                blocker.execute("ROLLBACK")
            finally:
                blocker.close()
        finally:
            stop.set()
            gateway.stop()
            for thread in threads:
                thread.join(20)
        assert not any(thread.is_alive() for thread in threads)

        completed: dict[str, str] = {}
        for outcome in outcomes:
            completed.update(outcome.completed)
        completed_while_held = sum(
            1 for o in outcomes for when in o.completed_at if when > held_at + 0.05
        )
        early_errors = [e for o in outcomes for e in o.errors if e[0] < killed_at]
        assert not early_errors, f"requests failed before the kill: {early_errors[:5]}"
        cut = [rid for o in outcomes for rid in o.started_only]

        # Every completed request has exactly one ledger row, with the right shape.
        rows = read_ledger(db_path)
        per_id = Counter(row.request_id for row in rows)
        assert max(per_id.values(), default=1) == 1
        by_id = {row.request_id: row for row in rows}
        missing = [rid for rid in completed if rid not in by_id]
        print(
            f"\nkill -9 after {loaded_s + HOLD_S:.1f}s with {THREADS} clients (commits held back "
            f"for the last {HOLD_S}s): {len(completed)} requests completed "
            f"({completed_while_held} while commits were held), "
            f"{len(completed) - len(missing)} of them found in the ledger (exactly once "
            f"each); {len(cut)} cut after their headers, {len(rows)} rows in all"
        )
        assert len(completed) >= MIN_COMPLETED // 2, "too little load to mean anything"
        assert set(completed.values()) == set(KINDS)
        assert not missing, f"{len(missing)} completed requests have no ledger row"
        for request_id, kind in completed.items():
            row = by_id[request_id]
            assert (row.surface, row.streamed) == SURFACES[kind]
            assert row.status == 200
            assert row.error is None
            assert not row.client_disconnected
            assert row.key_id == key["id"]
            assert row.team == "ml"
            assert row.output_tokens > 0
            assert row.cost_nanos > 0

        # The restarted gateway opens the same database (migrations again: idempotent)
        # and serves as before.
        with GatewayProcess(config) as again:
            client = openai.OpenAI(base_url=again.url + "/v1", api_key=key["key"], max_retries=0)
            with client:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "after the crash"}]
                )
                assert raw.parse().choices[0].message.content
            usage = http_request(
                "GET", again.url + "/admin/usage?group_by=team&period=all", token=ADMIN_TOKEN
            )
            assert usage.status == 200
            assert again.stop() == 0
        after = read_ledger(db_path)
        assert len(after) == len(rows) + 1
        assert raw.headers[REQUEST_ID] in {r.request_id for r in after}
        report = usage.json()
        assert report["top"][0]["group"] == "ml"
        assert report["top"][0]["requests"] == len(rows) + 1
        assert report["total_cost_nanos"] == sum(r.cost_nanos for r in after)
