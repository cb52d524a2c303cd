"""Agent retries in the ledger (issue 12, "What to build" item 6): Claude Code and Codex
retry at the application level with ``x-stainless-retry-count: 0``; a request their
session sends again after a refusal or an upstream failure is recorded as a retry
(``retry_count`` 1, 2, ...) and counted in the usage report's ``retries``.

Driven by a manual clock (the retry window is measured on the gateway's clock); the
clients are the real SDKs with their own retries off, sending what the agents send: the
session header, the same conversation again, Codex's tool list and fresh ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import openai
import pytest

from codex_shapes import codex_body
from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.retries import RETRY_WINDOW_S
from spendgate.services.reports import usage_report

CLAUDE = "claude-haiku-4-5"
CODEX = "gpt-4o-mini"
LIMITED = "gpt-4o"  # one request a minute per session


@pytest.fixture(scope="module")
def clocked(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayHarness, ManualClock]]:
    clock = ManualClock(datetime(2026, 12, 7, 9, 0, tzinfo=UTC))

    def configure(data: dict[str, Any]) -> None:
        data["limits"] = [
            {"name": "per-session", "scope": "session", "models": [LIMITED], "requests": "1/minute"}
        ]

    harness = GatewayHarness(
        tmp_path_factory.mktemp("agent-retries") / "spendgate.db", configure=configure, clock=clock
    ).start()
    try:
        yield harness, clock
    finally:
        harness.stop()


def rows(gw: GatewayHarness, key_id: str) -> list[LedgerRow]:
    every = gw.ledger(key_id) + gw.ledger(key_id, blocked=True)
    return sorted(every, key=lambda row: (row.ts, row.retry_count))


def claude_code(gw: GatewayHarness, secret: str, session: str) -> anthropic.Anthropic:
    client: anthropic.Anthropic = gw.sdk_client(
        "anthropic",
        secret,
        max_retries=0,
        default_headers={"x-claude-code-session-id": session, "x-app": "cli"},
    )
    return client


def ask_claude(client: anthropic.Anthropic, turns: int, headers: dict[str, str]) -> Any:
    messages: list[Any] = []
    for turn in range(turns):
        messages.append({"role": "user", "content": f"Step {turn}: fix the failing test."})
        if turn < turns - 1:
            messages.append({"role": "assistant", "content": f"Done with step {turn}."})
    return client.messages.create(
        model=CLAUDE, max_tokens=200, messages=messages, extra_headers=headers
    )


def test_claude_codes_own_retries_after_upstream_failures_are_counted(
    clocked: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = clocked
    secret = gw.create_key(name="claude-code", user="cc-dev")
    key_id = gw.last_key_id
    session = str(uuid.uuid4())
    with claude_code(gw, secret, session) as client:
        for _ in range(2):  # Claude Code's backoff: 1.0 s, then 2.2 s
            with pytest.raises(anthropic.APIStatusError) as caught:
                ask_claude(client, 1, {"x-sim-status": "529"})
            assert caught.value.status_code == 529
            clock.advance(2.2)
        ask_claude(client, 1, {})  # the third try succeeds
        clock.advance(5)
        ask_claude(client, 2, {})  # the next turn of the conversation: a first try
    found = rows(gw, key_id)
    assert [(row.status, row.retry_count) for row in found] == [
        (529, 0),
        (529, 1),
        (200, 2),
        (200, 0),
    ]
    assert {row.session_id for row in found} == {session}
    report = gw.call(
        usage_report(gw.gateway.storage, gw.gateway.clock, group_by="key", period="today", top=50)
    )
    (group,) = [g for g in report.groups if g.group == key_id]
    assert (group.requests, group.retries) == (4, 2)
    assert group.retry_cost_nanos == found[2].cost_nanos > 0


def test_codex_retries_with_fresh_ids_are_counted(
    clocked: tuple[GatewayHarness, ManualClock],
) -> None:
    """Codex's body changes on every request (ids, client metadata, cache key): the retry
    is recognised by its session and the shape of its conversation, not its bytes."""
    gw, clock = clocked
    secret = gw.create_key(name="codex", user="codex-dev")
    key_id = gw.last_key_id
    session = str(uuid.uuid4())
    client: openai.OpenAI = gw.sdk_client(
        "openai", secret, max_retries=0, default_headers={"session-id": session}
    )
    with client:

        def turn(headers: dict[str, str]) -> None:
            body = codex_body(CODEX, "Fix the failing test.")
            body["input"][0]["id"] = f"msg_{uuid.uuid4().hex}"
            body["prompt_cache_key"] = str(uuid.uuid4())
            body.pop("model")
            stream = client.responses.create(
                model=CODEX,
                extra_headers=headers,
                extra_body={"client_metadata": {"turn_id": str(uuid.uuid4())}},
                **body,
            )
            for _ in stream:
                pass

        for _ in range(3):
            with pytest.raises(openai.InternalServerError):
                turn({"x-sim-status": "500"})
            clock.advance(1.02)  # "Reconnecting... n/5"
        turn({})
    found = rows(gw, key_id)
    assert [(row.status, row.retry_count) for row in found] == [
        (500, 0),
        (500, 1),
        (500, 2),
        (200, 3),
    ]
    assert all(row.session_id == session for row in found)


def test_a_request_repeated_after_a_refusal_is_a_retry(
    clocked: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = clocked
    secret = gw.create_key(name="limited")
    key_id = gw.last_key_id
    session = str(uuid.uuid4())
    client: openai.OpenAI = gw.sdk_client(
        "openai", secret, max_retries=0, default_headers={"session-id": session}
    )
    with client:

        def ask(text: str) -> None:
            client.chat.completions.create(
                model=LIMITED, messages=[{"role": "user", "content": text}], max_tokens=50
            )

        ask("first turn")
        clock.advance(1)
        for _ in range(2):
            with pytest.raises(openai.RateLimitError):
                ask("second turn")
            clock.advance(5)
        clock.advance(60)  # the window frees up: the second turn goes through
        ask("second turn")
    found = rows(gw, key_id)
    assert [(row.status, row.blocked_by, row.retry_count) for row in found] == [
        (200, None, 0),
        (429, "per-session:requests/minute", 0),
        (429, "per-session:requests/minute", 1),
        (200, None, 2),
    ]


def test_other_sessions_new_turns_and_late_requests_are_first_tries(
    clocked: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = clocked
    secret = gw.create_key(name="first-tries")
    key_id = gw.last_key_id
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    with claude_code(gw, secret, first) as one, claude_code(gw, secret, second) as other:
        with pytest.raises(anthropic.APIStatusError):
            ask_claude(one, 1, {"x-sim-status": "529"})
        clock.advance(1)
        ask_claude(other, 1, {})  # another session: not a retry of the first's failure
        ask_claude(one, 2, {})  # the same session, another turn: not a retry either
        with pytest.raises(anthropic.APIStatusError):
            ask_claude(one, 3, {"x-sim-status": "529"})
        clock.advance(RETRY_WINDOW_S + 1)
        ask_claude(one, 3, {})  # too late to be its retry
    assert [row.retry_count for row in rows(gw, key_id)] == [0, 0, 0, 0, 0]


def test_an_sdks_own_retry_count_still_counts(
    clocked: tuple[GatewayHarness, ManualClock],
) -> None:
    """Without a session, ``x-stainless-retry-count`` numbers the SDK's retries as before."""
    gw, _ = clocked
    secret = gw.create_key(name="sdk")
    key_id = gw.last_key_id
    client = gw.sdk_client("openai", secret, max_retries=2)
    with client, pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model=CODEX,
            messages=[{"role": "user", "content": "no session"}],
            max_tokens=50,
            extra_headers={"x-sim-status": "500"},
        )
    assert sorted(row.retry_count for row in rows(gw, key_id)) == [0, 1, 2]
