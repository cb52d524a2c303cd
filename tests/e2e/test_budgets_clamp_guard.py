"""Output clamping, the streaming guard, and settlement on the unhappy paths.

Clamping: when what a budget has left affords fewer output tokens than a request asks for
(but at least ``min_output_tokens``), spendgate lowers the ceiling it sends upstream, in
the field the request used, and says so (``x-spendgate-output-clamped``, the ledger's
``clamped_from`` / ``output_ceiling``). A request that names no ceiling (Codex) gets the
model's maximum, or the clamped value; Claude Code's ``max_tokens: 32000`` with thinking
has both ``max_tokens`` and ``thinking.budget_tokens`` lowered consistently.

Streaming guard: an upstream that ignores its max (``x-sim-ignore-max``) is cut at the
reserved ceiling, and the client's stream still ends the dialect's own way.

Settlement: a client that disconnects, an upstream error and an unreachable upstream all
leave reserved at 0; only generated tokens are charged.
"""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.admission import WorstCase, worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.services.budgets import BudgetView
from spendgate.simulator import records as sim_records
from spendgate.simulator.records import RequestRecord

PROMPT = [{"role": "user", "content": "Write about careful gateways."}]
MIN_OUTPUT = 64

BUDGETS: list[dict[str, Any]] = [
    # every user gets $0.0005: gpt-4o-mini affords ~820 output tokens from it
    {"name": "per-user", "scope": "user", "match": "*", "limit_usd": "0.0005"},
    # Claude Code on claude-sonnet-4-6 ($15 / 1M output): ~2,000 output tokens
    {"name": "claude-code", "scope": "service", "match": "claude-code", "limit_usd": "0.03"},
    # ample: nothing is clamped
    {"name": "ample", "scope": "tag", "match": "ample", "limit_usd": "10"},
    # ~100 output tokens of gpt-4o-mini
    {"name": "tight", "scope": "tag", "match": "tight", "limit_usd": "0.00007"},
]


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [{**spec, "period": "daily"} for spec in BUDGETS]
    data["budget_settings"] = {"min_output_tokens": MIN_OUTPUT}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("clamp") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def sdk(gw: GatewayHarness) -> Iterator[Callable[[str, str], Any]]:
    made: list[Any] = []

    def make(kind: str, secret: str) -> Any:
        client: Any
        if kind == "anthropic":
            client = anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0)
        else:
            client = openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0)
        made.append(client)
        return client

    try:
        yield make
    finally:
        for client in made:
            client.close()


# --------------------------------------------------------------------------- helpers


def tagged(**extra: str) -> tuple[str, dict[str, str]]:
    tag = uuid.uuid4().hex
    return tag, {"x-test-id": tag, **extra}


def the_record(gw: GatewayHarness, tag: str) -> RequestRecord:
    (record,) = [r for r in list(gw.sim.records) if r.headers.get("x-test-id") == tag]
    return record


def the_row(gw: GatewayHarness, key_id: str, timeout: float = 5.0) -> LedgerRow:
    deadline = time.monotonic() + timeout
    while not gw.ledger(key_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    (row,) = gw.ledger(key_id)
    return row


def eventually(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``probe`` from the test thread (it may call into the harness loop)."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def view(gw: GatewayHarness, name: str, member: str) -> BudgetView:
    (found,) = [v for v in gw.call(gw.gateway.budget_service.overview(name)) if v.member == member]
    return found


def worst_for(gw: GatewayHarness, model: str, body: dict[str, Any], ceiling: int) -> WorstCase:
    """The gateway's own worst-case pricing of ``body`` (token count + margin, dearest rates
    the body can incur: no cache write for a Claude body without ``cache_control``)."""
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    if "claude" in model:
        count = tokens.count_anthropic_input(model, body)
    elif "input" in body:
        count = tokens.count_responses_input(model, body)
    else:
        count = tokens.count_chat_input(model, body)
    claude = "claude" in model  # Anthropic writes its cache only where a body asks
    return worst_case(
        route.price,
        input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
        input_exact=count.exact,
        ceiling=ceiling,
        choices=1,
        cache_write=not claude,
        cache_write_1h=not claude,
    )


def affordable(gw: GatewayHarness, model: str, body: dict[str, Any], room: int) -> int:
    return worst_for(gw, model, body, 1).affordable(Unit.NANOS, room)


# --------------------------------------------------------------------------- clamping

CHAT_LIMIT = 500_000  # the per-user budget, in nano-dollars


@pytest.mark.parametrize(
    ("surface", "field"),
    [
        ("chat", "max_tokens"),
        ("chat", "max_completion_tokens"),
        ("responses", "max_output_tokens"),
    ],
)
def test_clamped_ceiling_reaches_the_upstream_in_the_requests_own_field(
    gw: GatewayHarness, sdk: Callable[[str, str], Any], surface: str, field: str
) -> None:
    user = f"clamp-{surface}-{field}"
    client = sdk("openai", gw.create_key(name=user, user=user))
    tag, headers = tagged()
    if surface == "chat":
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": PROMPT, field: 4000}
        expected = affordable(gw, "gpt-4o-mini", body, CHAT_LIMIT)
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=PROMPT, extra_headers=headers, **{field: 4000}
        )
        assert raw.parse().usage.completion_tokens <= expected
    else:
        body = {"model": "gpt-4o-mini", "input": "Write about careful gateways.", field: 4000}
        expected = affordable(gw, "gpt-4o-mini", body, CHAT_LIMIT)
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini",
            input="Write about careful gateways.",
            max_output_tokens=4000,
            extra_headers=headers,
        )
        assert raw.parse().usage.output_tokens <= expected
    assert MIN_OUTPUT <= expected < 4000

    sent = the_record(gw, tag).body
    assert sent[field] == expected
    other = {"max_tokens", "max_completion_tokens", "max_output_tokens"} - {field}
    assert not other & set(sent), sent  # no second ceiling field invented
    assert raw.headers["x-spendgate-output-clamped"] == f"{expected} (requested 4000)"
    row = the_row(gw, gw.last_key_id)
    assert row.clamped_from == 4000
    assert row.output_ceiling == expected
    state = view(gw, "per-user", user).state
    assert state.reserved == 0
    assert state.spent == row.cost_nanos <= CHAT_LIMIT


def codex_request(client: openai.OpenAI, headers: dict[str, str]) -> Any:
    """What Codex sends (CLIENTS.md §8): Responses, streamed, no max_output_tokens."""
    stream = client.responses.create(
        model="gpt-4o-mini",
        instructions="You are a coding agent.",
        input=[{"type": "message", "role": "user", "content": "Fix the failing test."}],
        stream=True,
        store=False,
        include=["reasoning.encrypted_content"],
        prompt_cache_key=str(uuid.uuid4()),
        extra_headers=headers,
    )
    events = list(stream)
    assert events[-1].type == "response.completed"
    return events


def test_codex_request_without_a_ceiling_gets_the_models_maximum(
    gw: GatewayHarness, sdk: Callable[[str, str], Any]
) -> None:
    client = sdk("openai", gw.create_key(name="codex-ample", tags=["ample"]))
    tag, headers = tagged()
    codex_request(client, headers)
    sent = the_record(gw, tag).body
    assert sent["max_output_tokens"] == 16_384  # gpt-4o-mini's maximum output
    row = the_row(gw, gw.last_key_id)
    assert row.output_ceiling == 16_384
    assert row.clamped_from is None


def test_codex_request_without_a_ceiling_gets_the_clamped_one(
    gw: GatewayHarness, sdk: Callable[[str, str], Any]
) -> None:
    client = sdk("openai", gw.create_key(name="codex-user", user="codex-dev"))
    tag, headers = tagged()
    with client.responses.with_streaming_response.create(
        model="gpt-4o-mini",
        instructions="You are a coding agent.",
        input=[{"type": "message", "role": "user", "content": "Fix the failing test."}],
        stream=True,
        store=False,
        extra_headers=headers,
    ) as response:
        clamped = response.headers["x-spendgate-output-clamped"]
        for _ in response.iter_lines():
            pass
    sent = the_record(gw, tag).body
    body = {key: sent[key] for key in ("model", "instructions", "input")}
    expected = affordable(gw, "gpt-4o-mini", body, CHAT_LIMIT)
    assert MIN_OUTPUT <= expected < 16_384
    assert sent["max_output_tokens"] == expected
    assert clamped == f"{expected} (requested 16384)"
    row = the_row(gw, gw.last_key_id)
    assert row.output_ceiling == expected
    assert row.clamped_from == 16_384


def test_claude_code_max_tokens_and_thinking_budget_lowered_together(
    gw: GatewayHarness, sdk: Callable[[str, str], Any]
) -> None:
    client = sdk("anthropic", gw.create_key(name="claude-code", service="claude-code"))
    tag, headers = tagged(**{"x-sim-reasoning-tokens": "300", "x-sim-output-tokens": "500"})
    thinking = {"type": "enabled", "budget_tokens": 31_999}
    system = [{"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."}]
    with client.messages.stream(
        model="claude-sonnet-4-6",
        max_tokens=32_000,
        system=system,
        messages=PROMPT,
        thinking=thinking,
        extra_headers=headers | {"anthropic-beta": "interleaved-thinking-2025-05-14"},
        extra_query={"beta": "true"},
    ) as stream:
        message = stream.get_final_message()
    assert message.stop_reason == "end_turn"
    body = {"model": "claude-sonnet-4-6", "system": system, "messages": PROMPT}
    expected = affordable(gw, "claude-sonnet-4-6", body, 30_000_000)
    assert 1025 <= expected < 32_000

    record = the_record(gw, tag)
    assert record.query == "beta=true"
    sent = record.body
    assert sent["max_tokens"] == expected
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": expected - 1}
    assert 1024 <= sent["thinking"]["budget_tokens"] < sent["max_tokens"]
    row = the_row(gw, gw.last_key_id)
    assert row.clamped_from == 32_000
    assert row.output_ceiling == expected
    assert row.output_tokens == 500  # thinking included (Anthropic reports no split)
    assert view(gw, "claude-code", "claude-code").state.reserved == 0


# --------------------------------------------------------------------------- streaming guard

OVERRUN = {"x-sim-ignore-max": "1", "x-sim-output-tokens": "400", "x-sim-chunk-delay-ms": "3"}
LOW = 50  # the ceiling the request asks for; the upstream ignores it and sends 400 tokens


def guard_checks(
    gw: GatewayHarness, tag: str, key_id: str, ceiling: int, budget: str, member: str
) -> LedgerRow:
    record = the_record(gw, tag)
    assert gw.wait_for(lambda: record.finished)
    # spendgate closed the upstream connection as soon as the ceiling was passed
    assert record.outcome == sim_records.DISCONNECTED, record.to_json()
    assert record.output_tokens_sent < 400
    row = the_row(gw, key_id)
    assert row.output_ceiling == ceiling
    assert row.output_tokens <= ceiling
    assert row.error == (
        f"stream ended by spendgate at the reserved output ceiling ({ceiling} tokens)"
    )
    assert not row.client_disconnected
    body = {"model": row.requested_model, "messages": PROMPT}
    if row.surface == "openai.responses":
        body = {"model": row.requested_model, "input": "Write about careful gateways."}
    worst = worst_for(gw, row.requested_model, body, ceiling)
    assert row.cost_nanos <= worst.amount(Unit.NANOS, ceiling)
    state = view(gw, budget, member).state
    assert state.reserved == 0
    assert state.spent + state.reserved <= state.limit
    return row


@pytest.mark.parametrize("include_usage", [True, False])
def test_guard_ends_openai_chat_stream_with_length_and_done(
    gw: GatewayHarness, sdk: Callable[[str, str], Any], include_usage: bool
) -> None:
    client = sdk("openai", gw.create_key(name="guard-chat", tags=["ample"]))
    tag, headers = tagged(**OVERRUN)
    extra: dict[str, Any] = {}
    if include_usage:
        extra["stream_options"] = {"include_usage": True}
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=PROMPT,
        max_tokens=LOW,
        stream=True,
        extra_headers=headers,
        **extra,
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    # and the SDK, iterating the same kind of stream, ends without an error
    tag2, headers2 = tagged(**OVERRUN)
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=PROMPT,
            max_tokens=LOW,
            stream=True,
            extra_headers=headers2,
            **extra,
        )
    )
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length"
    assert finishes.count("length") == 1
    usage = [c.usage for c in chunks if c.usage is not None]
    if include_usage:
        assert len(usage) == 1
        assert chunks[-1].usage is not None
        assert not chunks[-1].choices
        assert 0 < usage[0].completion_tokens <= LOW
    else:
        assert usage == []
    rows = sorted(gw.ledger(gw.last_key_id), key=lambda r: r.ts)
    assert len(rows) == 2
    for probe in (tag, tag2):
        record = the_record(gw, probe)
        assert gw.wait_for(lambda r=record: r.finished)  # type: ignore[misc]
        assert record.outcome == sim_records.DISCONNECTED
    for row in rows:
        assert row.output_tokens <= LOW
        assert row.output_ceiling == LOW
        assert (
            row.error == f"stream ended by spendgate at the reserved output ceiling ({LOW} tokens)"
        )
    state = view(gw, "ample", "ample").state
    assert state.reserved == 0
    assert state.spent + state.reserved <= state.limit


def test_guard_ends_anthropic_stream_with_max_tokens_and_message_stop(
    gw: GatewayHarness, sdk: Callable[[str, str], Any]
) -> None:
    client = sdk("anthropic", gw.create_key(name="guard-ant", tags=["ample"]))
    tag, headers = tagged(**OVERRUN)
    with client.messages.stream(
        model="claude-haiku-4-5", max_tokens=LOW, messages=PROMPT, extra_headers=headers
    ) as stream:
        kinds = [event.type for event in stream]
        message = stream.get_final_message()
    assert message.stop_reason == "max_tokens"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert "content_block_stop" in kinds
    assert 0 < message.usage.output_tokens <= LOW
    row = guard_checks(gw, tag, gw.last_key_id, LOW, "ample", "ample")
    assert message.usage.output_tokens == row.output_tokens


def test_guard_ends_responses_stream_with_response_incomplete(
    gw: GatewayHarness, sdk: Callable[[str, str], Any]
) -> None:
    client = sdk("openai", gw.create_key(name="guard-resp", tags=["ample"]))
    tag, headers = tagged(**OVERRUN)
    events = list(
        client.responses.create(
            model="gpt-4o-mini",
            input="Write about careful gateways.",
            max_output_tokens=LOW,
            stream=True,
            extra_headers=headers,
        )
    )
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.status == "incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"
    assert 0 < last.response.usage.output_tokens <= LOW
    guard_checks(gw, tag, gw.last_key_id, LOW, "ample", "ample")


def test_guard_cuts_at_a_clamped_ceiling(
    gw: GatewayHarness, sdk: Callable[[str, str], Any]
) -> None:
    """The request asks for 4000; the tight budget affords ~100, and the upstream ignores
    the lowered max it was sent: the stream is still cut at the clamped ceiling."""
    client = sdk("openai", gw.create_key(name="guard-tight", tags=["tight"]))
    tag, headers = tagged(**OVERRUN)
    body = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 4000}
    expected = affordable(gw, "gpt-4o-mini", body, 70_000)
    assert MIN_OUTPUT <= expected < 400
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini",
        messages=PROMPT,
        max_tokens=4000,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers=headers,
    ) as response:
        assert response.headers["x-spendgate-output-clamped"] == f"{expected} (requested 4000)"
        chunks = list(response.parse())
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens <= expected
    assert the_record(gw, tag).body["max_tokens"] == expected
    row = guard_checks(gw, tag, gw.last_key_id, expected, "tight", "tight")
    assert row.clamped_from == 4000


# --------------------------------------------------------------------------- settlement paths

PACED = {"x-sim-chunk-delay-ms": "30", "x-sim-output-tokens": "300"}


@pytest.mark.parametrize("kind", ["chat", "anthropic"])
def test_client_disconnect_settles_and_charges_what_was_generated(
    gw: GatewayHarness, sdk: Callable[[str, str], Any], kind: str
) -> None:
    client = sdk(
        "anthropic" if kind == "anthropic" else "openai",
        gw.create_key(name=f"gone-{kind}", tags=["ample"]),
    )
    tag, headers = tagged(**PACED)
    if kind == "anthropic":
        stream = client.messages.create(
            model="claude-haiku-4-5",
            messages=PROMPT,
            max_tokens=1000,
            stream=True,
            extra_headers=headers,
        )
    else:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=PROMPT,
            max_tokens=1000,
            stream=True,
            extra_headers=headers,
        )
    for seen, _event in enumerate(stream, start=1):
        if seen == 8:
            break
    assert view(gw, "ample", "ample").state.reserved > 0  # still in flight
    stream.close()

    record = the_record(gw, tag)
    assert gw.wait_for(lambda: record.finished)
    assert record.outcome == sim_records.DISCONNECTED
    row = the_row(gw, gw.last_key_id)
    assert row.client_disconnected
    assert 0 < row.output_tokens < 300
    assert row.cost_nanos > 0
    assert eventually(lambda: view(gw, "ample", "ample").state.reserved == 0)


@pytest.mark.parametrize("status", [500, 429])
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_error_is_charged_nothing_and_released(
    gw: GatewayHarness, sdk: Callable[[str, str], Any], status: int, stream: bool
) -> None:
    user = f"upstream-{status}-{stream}"
    client = sdk("openai", gw.create_key(name=user, user=user))
    tag, headers = tagged(**{"x-sim-status": str(status)})
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=PROMPT,
            max_tokens=100,
            stream=stream,
            extra_headers=headers,
        )
    assert caught.value.status_code == status
    assert the_record(gw, tag).status == status
    row = the_row(gw, gw.last_key_id)
    assert row.status == status
    assert row.cost_nanos == 0
    state = view(gw, "per-user", user).state
    assert (state.spent, state.reserved) == (0, 0)


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_upstream_releases_the_reservation(tmp_path: Path) -> None:
    port = closed_port()

    def unreachable(data: dict[str, Any]) -> None:
        configure(data)
        data["providers"]["openai"]["base_url"] = f"http://127.0.0.1:{port}/v1"

    gw = GatewayHarness(tmp_path / "spendgate.db", configure=unreachable).start()
    try:
        secret = gw.create_key(name="nowhere", user="nowhere")
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as caught:
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=PROMPT, max_tokens=100, stream=stream
                    )
                assert caught.value.status_code == 502
        state = view(gw, "per-user", "nowhere").state
        assert (state.spent, state.reserved) == (0, 0)
        # It never reached an upstream: no ledger row, exactly as without budgets.
        assert gw.ledger(gw.last_key_id) == []
        assert gw.sim.records == []
    finally:
        gw.stop()


def test_lease_is_renewed_while_a_slow_request_is_in_flight(tmp_path: Path) -> None:
    """A request that outlives its 1 s lease is kept alive by the lease keeper: it settles
    normally, once, with its real usage (not lapsed, not charged at its reservation)."""

    def short_lease(data: dict[str, Any]) -> None:
        configure(data)
        data["budget_settings"]["lease_ttl_s"] = 1

    gw = GatewayHarness(tmp_path / "spendgate.db", configure=short_lease).start()
    try:
        secret = gw.create_key(name="slow", user="slow")
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
            completion = client.chat.completions.create(
                model="gpt-4o-mini",
                messages=PROMPT,
                max_tokens=100,
                extra_headers={"x-sim-delay-ms": "2500", "x-sim-output-tokens": "40"},
            )
        assert completion.usage is not None
        (row,) = gw.ledger(gw.last_key_id)
        assert not row.unreconciled
        assert row.error is None
        assert row.output_tokens == 40
        state = view(gw, "per-user", "slow").state
        assert (state.spent, state.reserved) == (row.cost_nanos, 0)
    finally:
        gw.stop()


# --------------------------------------------------------------------------- coding agents

CLAUDE_CODE = {"user-agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-app": "cli"}
CODEX = {"originator": "codex_exec", "user-agent": "codex_exec/0.169.0 (Linux; x86_64)"}
LONG = {"x-sim-output-tokens": "5000"}  # the simulator writes up to the ceiling


@pytest.mark.parametrize("stream", [False, True])
def test_a_clamped_agent_answer_ends_the_turn_other_clients_see_the_ceiling(
    gw: GatewayHarness, sdk: Callable[[str, str], Any], stream: bool
) -> None:
    """The same clamped request (the per-user budget: ~100 output tokens of Haiku) from
    Claude Code, from Codex and from a plain SDK client: the agents are told the turn ended
    (end_turn / response.completed), so they show what was paid for instead of sending the
    whole context again; every other client gets the provider's own ceiling stop."""
    stops = {}
    for who, extra in (("claude-code", CLAUDE_CODE), ("codex", CODEX), ("sdk", {})):
        user = f"agent-{who}-{stream}"
        claude = sdk("anthropic", gw.create_key(name=user, user=user))
        key_id = gw.last_key_id
        headers = {**LONG, **extra}
        if stream:
            with claude.messages.stream(
                model="claude-haiku-4-5", max_tokens=4000, messages=PROMPT, extra_headers=headers
            ) as events:
                message = events.get_final_message()
        else:
            message = claude.messages.create(
                model="claude-haiku-4-5", max_tokens=4000, messages=PROMPT, extra_headers=headers
            )
        row = the_row(gw, key_id)
        assert row.clamped_from == 4000
        assert row.output_tokens == row.output_ceiling  # it ran into the clamp
        stops[who] = message.stop_reason
        openai_client = sdk("openai", gw.create_key(name=f"oa-{user}", user=f"oa-{user}"))
        oa_id = gw.last_key_id
        response = openai_client.responses.create(
            model="gpt-4o-mini",
            input="Write about careful gateways.",
            max_output_tokens=4000,
            stream=False,
            extra_headers=headers,
        )
        assert the_row(gw, oa_id).clamped_from == 4000
        stops[f"{who} responses"] = response.status
    assert stops == {
        "claude-code": "end_turn",
        "claude-code responses": "completed",
        "codex": "end_turn",
        "codex responses": "completed",
        "sdk": "max_tokens",
        "sdk responses": "incomplete",
    }


@pytest.mark.parametrize("reason", ["max_output_tokens", "content_filter"])
def test_a_clamped_codex_stream_is_told_completed_only_at_the_ceiling(
    gw: GatewayHarness, sdk: Callable[[str, str], Any], reason: str
) -> None:
    """Codex's clamped stream: its ``response.output_item.done`` comes before the terminal
    event, so whether its item is told ``completed`` waits for that event. At the ceiling
    the item and the response are completed; stopped by a content filter both stay
    ``incomplete`` (the item was told completed before the response said incomplete)."""
    user = f"codex-stream-{reason}"
    client = sdk("openai", gw.create_key(name=user, user=user))
    headers = {**LONG, **CODEX}
    if reason != "max_output_tokens":
        headers = {**CODEX, "x-sim-incomplete-reason": reason, "x-sim-output-tokens": "20"}
    events = list(
        client.responses.create(
            model="gpt-4o-mini",
            input="Write about careful gateways.",
            max_output_tokens=4000,
            stream=True,
            extra_headers=headers,
        )
    )
    assert the_row(gw, gw.last_key_id).clamped_from == 4000
    items = [e.item.status for e in events if e.type == "response.output_item.done"]
    last = events[-1]
    if reason == "max_output_tokens":
        assert (items, last.type, last.response.status) == (
            ["completed"],
            "response.completed",
            "completed",
        )
    else:
        assert (items, last.type, last.response.status) == (
            ["incomplete"],
            "response.incomplete",
            "incomplete",
        )
        assert last.response.incomplete_details.reason == reason
