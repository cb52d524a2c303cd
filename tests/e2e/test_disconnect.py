"""Clients that go away: the gateway must cancel the upstream request at once (a provider
keeps generating, and billing, otherwise) and still meter what was generated so far.

The simulator paces the stream (``x-sim-chunk-delay-ms: 50``, 300 output tokens at 3 a
chunk: about 5 s in all); the client reads three events and closes the response.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.tokens import count_output_text
from spendgate.simulator import records as sim_records
from spendgate.simulator import tokens as sim_tokens

PROMPT = [{"role": "user", "content": "Write a long story about a careful gateway."}]
PACED = {"x-sim-chunk-delay-ms": "50", "x-sim-output-tokens": "300"}
FULL_GENERATION_S = 100 * 0.05  # 300 tokens, 3 per chunk, 50 ms apart
EVENTS_READ = 3


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: httpx2.Request) -> None:
        self.count += 1


@pytest.fixture
def make_client(gw: GatewayHarness) -> Iterator[Callable[..., tuple[Any, Counter]]]:
    made: list[Any] = []

    def make(kind: str, secret: str, **options: Any) -> tuple[Any, Counter]:
        counter = Counter()
        client = gw.sdk_client(kind, secret, {"request": [counter]}, **options)
        made.append(client)
        return client, counter

    try:
        yield make
    finally:
        for client in made:
            client.close()


def tagged() -> tuple[str, dict[str, str]]:
    tag = uuid.uuid4().hex
    return tag, {"x-test-id": tag}


def the_record(gw: GatewayHarness, tag: str) -> sim_records.RequestRecord:
    (record,) = [r for r in list(gw.sim.records) if r.headers.get("x-test-id") == tag]
    return record


def eventually(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll ``probe`` from the test thread until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def the_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = eventually(lambda: gw.ledger(key_id))
    assert len(rows) == 1, rows
    return rows[0]


def open_stream(kind: str, client: Any, headers: dict[str, str]) -> Any:
    if kind == "chat":
        return client.chat.completions.create(
            model="gpt-4o-mini",
            messages=PROMPT,
            max_tokens=1000,
            stream=True,
            extra_headers=headers,
        )
    if kind == "responses":
        return client.responses.create(
            model="gpt-4o-mini",
            input="Write a long story about a careful gateway.",
            max_output_tokens=1000,
            stream=True,
            extra_headers=headers,
        )
    return client.messages.create(
        model="claude-haiku-4-5",
        messages=PROMPT,
        max_tokens=1000,
        stream=True,
        extra_headers=headers,
    )


def carries_text(kind: str, event: Any) -> bool:
    """Whether a streamed event carries generated text (so tokens were produced)."""
    if kind == "chat":
        return bool(event.choices and event.choices[0].delta.content)
    if kind == "responses":
        return bool(event.type == "response.output_text.delta")
    return bool(event.type == "content_block_delta")


def delta_text(kind: str, event: Any) -> str:
    if kind == "chat":
        return str(event.choices[0].delta.content)
    if kind == "responses":
        return str(event.delta)
    return str(event.delta.text)


def text_sent(first_delta: str, tokens: int) -> str:
    """The text of the first ``tokens`` tokens the simulator sent: its answers are a
    stream of common English words (one word, one token) from a start word chosen by the prompt,
    found here from the first delta the client saw."""
    for start in range(len(sim_tokens._WORDS)):
        if "".join(sim_tokens.generate_text(start, 3)) == first_delta:
            return "".join(sim_tokens.generate_text(start, tokens))
    raise AssertionError(f"not a simulator answer: {first_delta!r}")


@pytest.mark.parametrize("kind", ["chat", "responses", "anthropic"])
def test_client_closes_stream_midway(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]], kind: str
) -> None:
    client, counter = make_client(
        "anthropic" if kind == "anthropic" else "openai", gw.create_key(name=f"dc-{kind}")
    )
    key_id = gw.last_key_id
    tag, headers = tagged()
    stream = open_stream(kind, client, headers | PACED)
    received: list[str] = []
    for event in stream:
        if carries_text(kind, event):
            received.append(delta_text(kind, event))
            if len(received) == EVENTS_READ:
                break
    stream.close()
    closed_at = time.monotonic()
    assert counter.count == 1

    record = the_record(gw, tag)
    # the gateway cancelled the upstream request: the simulator stopped generating
    assert gw.wait_for(lambda: record.finished, timeout=FULL_GENERATION_S)
    stopped_after = time.monotonic() - closed_at
    assert record.outcome == sim_records.DISCONNECTED, record.to_json()
    assert stopped_after < 1.0, stopped_after
    assert 0 < record.output_tokens_sent < 300 // 2, record.to_json()

    row = the_row(gw, key_id)
    assert row.client_disconnected is True
    assert row.usage_estimated is True
    assert row.streamed is True
    assert row.status == 200
    assert row.upstream_request_id == record.request_id
    assert row.error == "client disconnected mid-stream"
    # at least what the client saw, at most what the upstream generated before it was
    # cancelled, both counted the gateway's documented way: exactly with the model's
    # encoding for OpenAI models, as an upper bound for Claude (spendgate.domain.tokens)
    model = "claude-haiku-4-5" if kind == "anthropic" else "gpt-4o-mini"
    seen = count_output_text(model, "".join(received)).tokens
    sent = count_output_text(model, text_sent(received[0], record.output_tokens_sent)).tokens
    assert 0 < seen <= row.output_tokens <= sent, (seen, row.output_tokens, sent)
    assert row.input_tokens > 0
    assert row.cost_nanos > 0


async def test_client_closes_raw_http_stream(gw: GatewayHarness) -> None:
    """The same with a bare HTTP client that drops the connection after three events."""
    secret = gw.create_key(name="dc-raw")
    key_id = gw.last_key_id
    tag, headers = tagged()
    body = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 1000, "stream": True}
    headers |= PACED | {"authorization": f"Bearer {secret}"}
    received: list[str] = []
    async with (
        httpx2.AsyncClient(base_url=gw.url) as http,
        http.stream("POST", "/v1/chat/completions", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:])["choices"]
                if choices and choices[0]["delta"].get("content"):
                    received.append(choices[0]["delta"]["content"])
                    if len(received) == EVENTS_READ:
                        break
    record = the_record(gw, tag)
    assert gw.wait_for(lambda: record.finished, timeout=1.0), record.to_json()
    assert record.outcome == sim_records.DISCONNECTED
    row = the_row(gw, key_id)
    assert row.client_disconnected is True
    assert row.usage_estimated is True
    seen = count_output_text("gpt-4o-mini", "".join(received)).tokens
    sent = count_output_text("gpt-4o-mini", text_sent(received[0], record.output_tokens_sent))
    assert 0 < seen <= row.output_tokens <= sent.tokens
    assert row.cost_nanos > 0


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_client_times_out_while_upstream_is_thinking(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]], kind: str
) -> None:
    client, counter = make_client(
        kind, gw.create_key(name=f"dc-wait-{kind}"), timeout=0.3, max_retries=0
    )
    key_id = gw.last_key_id
    tag, headers = tagged()
    headers["x-sim-delay-ms"] = "2000"
    started = time.monotonic()
    if kind == "openai":
        with pytest.raises(openai.APITimeoutError):
            client.chat.completions.create(
                model="gpt-4o-mini", messages=PROMPT, max_tokens=50, extra_headers=headers
            )
    else:
        with pytest.raises(anthropic.APITimeoutError):
            client.messages.create(
                model="claude-haiku-4-5", messages=PROMPT, max_tokens=50, extra_headers=headers
            )
    assert counter.count == 1
    record = the_record(gw, tag)
    assert gw.wait_for(lambda: record.finished, timeout=2.0)
    # cancelled while it was still waiting: well before its 2 s delay ran out
    assert time.monotonic() - started < 1.5
    assert record.outcome == sim_records.DISCONNECTED
    assert record.output_tokens_sent == 0
    row = the_row(gw, key_id)
    assert row.client_disconnected is True
    assert row.status == 499
    assert row.usage_estimated is True
    assert row.output_tokens == 0
    assert row.input_tokens > 0
    assert row.streamed is False
    assert row.upstream_request_id is None  # no answer ever came


def test_gateway_healthy_and_ledger_consistent_afterwards(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]]
) -> None:
    with httpx2.Client(base_url=gw.url) as http:
        assert http.get("/healthz").status_code == 200
    client, counter = make_client("openai", gw.create_key(name="dc-after"))
    key_id = gw.last_key_id
    stream = open_stream("chat", client, {})
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert counter.count == 1
    row = the_row(gw, key_id)
    assert row.status == 200
    assert not row.client_disconnected
    assert not row.usage_estimated
    assert gw.wait_for(lambda: gw.gateway.inflight == 0)
    rows = gw.ledger()
    by_upstream = [row.upstream_request_id for row in rows if row.upstream_request_id]
    assert len(by_upstream) == len(set(by_upstream))
    for record in list(gw.sim.records):
        assert record.finished, record.to_json()
        if record.stream or record.outcome in (sim_records.OK, sim_records.ERROR):
            assert by_upstream.count(record.request_id) == 1, record.to_json()
    # every request that reached the simulator left exactly one row
    assert len(rows) == len(gw.sim.records)
