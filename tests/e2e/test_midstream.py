"""Upstreams that fail after the answer started: a connection cut mid-stream, the
provider's own mid-stream error event, and answers without usage.

The SDKs never retry a stream that broke after its first byte (shared/CLIENTS.md §0.14),
so the gateway must tell the client in the stream's own dialect, and meter what was
generated before the break.
"""

from __future__ import annotations

import json
import socket
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
from spendgate.domain.tokens import count_output_text, token_counter
from spendgate.errors import StorageError
from spendgate.simulator import anthropic as sim_anthropic
from spendgate.simulator import openai_chat as sim_chat
from spendgate.simulator import openai_responses as sim_responses
from spendgate.simulator import records as sim_records
from spendgate.simulator import tokens as sim_tokens

PROMPT_TEXT = "Explain, step by step, how a metering gateway relays a streamed answer."
PROMPT = [{"role": "user", "content": PROMPT_TEXT}]
KINDS = ["chat", "responses", "anthropic"]
MODEL = {"chat": "gpt-4o-mini", "responses": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}
# Events before the first text delta: chat 1 (role), responses 4 (created, in_progress,
# output_item.added, content_part.added), anthropic 2 (message_start, content_block_start).
# Cutting three events after them leaves some text generated and seen.
CUT_AFTER = {"chat": 3, "responses": 6, "anthropic": 4}
SIM_ERROR_EVENT = {
    "chat": sim_chat.mid_stream_error,
    "responses": sim_responses.mid_stream_error,
    "anthropic": sim_anthropic.mid_stream_error,
}
PATH = {"chat": "/v1/chat/completions", "responses": "/v1/responses", "anthropic": "/v1/messages"}


class Counter:
    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: httpx2.Request) -> None:
        self.count += 1


@pytest.fixture
def make_client(gw: GatewayHarness) -> Iterator[Callable[..., tuple[Any, Counter]]]:
    """A sync SDK client for a surface, with the SDK's default retries and a counter."""
    made: list[Any] = []

    def make(kind: str, secret: str) -> tuple[Any, Counter]:
        counter = Counter()
        client = gw.sdk_client(kind, secret, {"request": [counter]})
        made.append(client)
        return client, counter

    try:
        yield make
    finally:
        for client in made:
            client.close()


def tagged(extra: dict[str, str]) -> tuple[str, dict[str, str]]:
    tag = uuid.uuid4().hex
    return tag, {"x-test-id": tag} | extra


def the_record(gw: GatewayHarness, tag: str) -> sim_records.RequestRecord:
    (record,) = [r for r in list(gw.sim.records) if r.headers.get("x-test-id") == tag]
    return record


def the_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    deadline = time.monotonic() + 5
    rows = gw.ledger(key_id)
    while not rows and time.monotonic() < deadline:
        time.sleep(0.02)
        rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def request_body(kind: str, *, stream: bool) -> dict[str, Any]:
    if kind == "responses":
        return {
            "model": MODEL[kind],
            "input": PROMPT_TEXT,
            "max_output_tokens": 500,
            "stream": stream,
        }
    limit = "max_tokens"
    return {"model": MODEL[kind], "messages": PROMPT, limit: 500, "stream": stream}


def open_stream(kind: str, client: Any, headers: dict[str, str]) -> Any:
    body = request_body(kind, stream=True)
    if kind == "chat":
        return client.chat.completions.create(**body, extra_headers=headers)
    if kind == "responses":
        return client.responses.create(**body, extra_headers=headers)
    return client.messages.create(**body, extra_headers=headers)


def text_of(kind: str, event: Any) -> str:
    if kind == "chat":
        return str(event.choices[0].delta.content or "") if event.choices else ""
    if event.type == "response.output_text.delta":
        return str(event.delta)
    if event.type == "content_block_delta":
        return str(event.delta.text)
    return ""


def drain(kind: str, stream: Any, seen: list[str]) -> None:
    """Read a stream to its end, keeping the text of each event."""
    for event in stream:
        seen.append(text_of(kind, event))


def text_sent(first_delta: str, tokens: int) -> str:
    """The simulator's answer is a stream of common English words (one word, one token) from a
    start word chosen by the prompt: rebuild the first ``tokens`` of it."""
    for start in range(len(sim_tokens._WORDS)):
        if "".join(sim_tokens.generate_text(start, 3)) == first_delta:
            return "".join(sim_tokens.generate_text(start, tokens))
    raise AssertionError(f"not a simulator answer: {first_delta!r}")


def raw_events(gw: GatewayHarness, kind: str, secret: str, headers: dict[str, str]) -> list[bytes]:
    """The stream exactly as the gateway sent it, split into SSE events."""
    headers = headers | {"authorization": f"Bearer {secret}"}
    if kind == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    with httpx2.Client(base_url=gw.url) as http:
        response = http.post(PATH[kind], json=request_body(kind, stream=True), headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    return [chunk + b"\n\n" for chunk in response.content.split(b"\n\n") if chunk]


def is_error_event(kind: str, event: bytes) -> bool:
    if kind == "chat":
        return event.startswith(b'data: {"error"')
    return event.startswith(b"event: error\n")


# --------------------------------------------------------------------- connection cut


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_dies_mid_stream(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]], kind: str
) -> None:
    client, counter = make_client(kind, gw.create_key(name=f"die-{kind}"))
    key_id = gw.last_key_id
    tag, headers = tagged({"x-sim-die-after-chunks": str(CUT_AFTER[kind])})
    seen: list[str] = []
    errors: list[Any] = []
    stream = open_stream(kind, client, headers)
    try:
        if kind == "chat":
            with pytest.raises(openai.APIError) as raised:
                drain(kind, stream, seen)
            assert not isinstance(raised.value, openai.APIStatusError | openai.APIConnectionError)
            errors.append(raised.value)
            assert "upstream" in raised.value.message
        elif kind == "responses":
            for event in stream:  # the error arrives as an event, not an exception
                if event.type == "error":
                    errors.append(event)
                else:
                    seen.append(text_of(kind, event))
            assert len(errors) == 1
            assert errors[0].code == "upstream_error"
        else:
            with pytest.raises(anthropic.APIStatusError) as raised_a:
                drain(kind, stream, seen)
            errors.append(raised_a.value)
            assert raised_a.value.status_code == 200
            assert raised_a.value.body["error"]["type"] == "api_error"
    finally:
        stream.close()
    assert counter.count == 1  # never retried
    record = the_record(gw, tag)
    assert record.outcome == sim_records.DIED
    received = "".join(seen)
    assert received

    row = the_row(gw, key_id)
    assert row.status == 200
    assert row.streamed is True
    assert row.client_disconnected is False
    assert row.usage_estimated is True
    assert (row.error or "").startswith("upstream broke mid-stream"), row.error
    assert row.upstream_request_id == record.request_id
    # the partial output is counted: what the client saw, at most what was generated
    low = count_output_text(MODEL[kind], received).tokens
    high = count_output_text(MODEL[kind], text_sent(seen_first(seen), record.output_tokens_sent))
    assert 0 < low <= row.output_tokens <= high.tokens
    assert row.input_tokens > 0
    assert row.cost_nanos > 0


def seen_first(pieces: list[str]) -> str:
    return next(piece for piece in pieces if piece)


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_dies_mid_stream_raw_events(gw: GatewayHarness, kind: str) -> None:
    """On the wire: the relayed events, then one dialect error event, then the end."""
    secret = gw.create_key(name=f"die-raw-{kind}")
    _, headers = tagged({"x-sim-die-after-chunks": str(CUT_AFTER[kind])})
    events = raw_events(gw, kind, secret, headers)
    assert len(events) == CUT_AFTER[kind] + 1
    assert not any(is_error_event(kind, event) for event in events[:-1])
    assert is_error_event(kind, events[-1])
    assert b"[DONE]" not in b"".join(events)
    if kind == "anthropic":
        assert b"message_stop" not in b"".join(events)


def raw_exchange(gw: GatewayHarness, path: str, body: dict[str, Any], secret: str) -> bytes:
    """Every byte the gateway sends back on one connection, read until it closes."""
    payload = json.dumps(body).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {secret}\r\ncontent-length: {len(payload)}\r\n"
        "connection: close\r\n\r\n"
    ).encode() + payload
    received = []
    with socket.create_connection((gw.running.host, gw.running.port), timeout=5) as conn:
        conn.sendall(request)
        while chunk := conn.recv(65536):
            received.append(chunk)
    return b"".join(received)


def test_a_row_storage_refuses_at_the_end_waits_in_the_spool(gw: GatewayHarness) -> None:
    """If storage will not take the row when the stream ends, the request has already
    been billed upstream and its trace lease holds its worst case: the row goes to the
    spool (fsynced to a local file), the client gets its whole answer, and once storage
    takes writes again the row is written exactly once, at its real cost."""
    secret = gw.create_key(name="ledger-down")
    key_id = gw.last_key_id
    gateway = gw.gateway
    storage = gateway.storage
    original = storage.settle

    async def failing(reservation_id: str, amounts: tuple[int, ...], row: LedgerRow) -> bool:
        if row.key_id == key_id:
            raise StorageError("disk full (simulated)")
        return await original(reservation_id, amounts, row)

    storage.settle = failing  # type: ignore[method-assign]
    try:
        wire = raw_exchange(gw, "/v1/chat/completions", request_body("chat", stream=True), secret)
        assert gw.ledger(key_id) == []
        [waiting] = gateway.spool.pending
        assert waiting.row.key_id == key_id
        assert waiting.reservation_id == waiting.row.request_id  # its trace lease
        spooled = gateway.spool.path
        assert spooled is not None
        assert spooled.read_bytes().count(b"\n") == 1
        assert gateway.spool.reservations() == {waiting.reservation_id}  # not renewed
        assert gw.call(gateway.lease_keeper.tick()) == 0  # storage still refuses it
        assert len(gateway.spool) == 1
    finally:
        del storage.settle  # type: ignore[method-assign]
    head, _, body = wire.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    assert b"[DONE]" in body
    assert body.endswith(b"0\r\n\r\n")
    gw.call(gateway.lease_keeper.tick())  # storage answers again: the spool is written
    gw.call(gateway.lease_keeper.tick())  # a second replay writes nothing twice
    [row] = gw.ledger(key_id)
    assert (row.status, row.unreconciled, row.request_id) == (200, False, waiting.row.request_id)
    assert row.cost_nanos == waiting.row.cost_nanos > 0
    assert len(gateway.spool) == 0
    assert not spooled.exists()


# --------------------------------------------------------------------- upstream error event


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_error_event_is_relayed_unchanged(gw: GatewayHarness, kind: str) -> None:
    secret = gw.create_key(name=f"err-raw-{kind}")
    key_id = gw.last_key_id
    tag, headers = tagged({"x-sim-error-after-chunks": str(CUT_AFTER[kind])})
    events = raw_events(gw, kind, secret, headers)
    record = the_record(gw, tag)
    assert record.outcome == sim_records.ERROR
    expected = SIM_ERROR_EVENT[kind](CUT_AFTER[kind])
    # the provider's own error event, byte for byte, and nothing of the gateway's after it
    assert events[-1] == expected, events[-3:]
    assert [is_error_event(kind, event) for event in events].count(True) == 1, events[-3:]
    assert len(events) == CUT_AFTER[kind] + 1

    row = the_row(gw, key_id)
    assert row.status == 200
    assert row.usage_estimated is True
    assert row.client_disconnected is False
    assert row.upstream_request_id == record.request_id
    message = json.loads(expected.split(b"data: ", 1)[1])
    inner = message.get("error", message)
    assert row.error is not None
    assert inner["message"] in row.error, row.error
    assert row.output_tokens > 0
    assert row.cost_nanos > 0


@pytest.mark.parametrize("kind", KINDS)
def test_upstream_error_event_reaches_the_sdk(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]], kind: str
) -> None:
    client, counter = make_client(kind, gw.create_key(name=f"err-{kind}"))
    tag, headers = tagged({"x-sim-error-after-chunks": str(CUT_AFTER[kind])})
    stream = open_stream(kind, client, headers)
    try:
        if kind == "chat":
            with pytest.raises(openai.APIError) as raised:
                drain(kind, stream, [])
            assert raised.value.message == (
                "The server had an error while processing your request. (simulated)"
            )
        elif kind == "responses":
            errors = [event for event in stream if event.type == "error"]
            assert len(errors) == 1
            assert errors[0].code == "server_error"
        else:
            with pytest.raises(anthropic.APIStatusError) as raised_a:
                drain(kind, stream, [])
            assert raised_a.value.status_code == 200
            assert raised_a.value.body == {
                "type": "error",
                "error": {"type": "overloaded_error", "message": "Overloaded"},
            }
    finally:
        stream.close()
    assert counter.count == 1
    assert the_record(gw, tag).outcome == sim_records.ERROR


# --------------------------------------------------------------------- no usage reported


def expected_openai_input(kind: str) -> int:
    """OpenAI models are counted exactly: the prompt's o200k tokens plus the documented
    framing (OpenAI's cookbook: 3 per message, its role, 3 to prime the reply;
    spendgate.domain.tokens). A Responses ``input`` string is one user message."""
    o200k = token_counter().count
    role = o200k("o200k_base", "user") if kind == "chat" else 0
    return o200k("o200k_base", PROMPT_TEXT) + role + 3 + 3


@pytest.mark.parametrize("kind", KINDS)
def test_stream_without_usage_is_estimated(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]], kind: str
) -> None:
    client, counter = make_client(kind, gw.create_key(name=f"nousage-{kind}"))
    key_id = gw.last_key_id
    tag, headers = tagged({"x-sim-no-usage": "1", "x-sim-output-tokens": "60"})
    with open_stream(kind, client, headers) as stream:
        text = "".join(text_of(kind, event) for event in stream)
    assert counter.count == 1
    record = the_record(gw, tag)
    assert record.outcome == sim_records.OK
    assert record.usage_reported is None
    assert record.output_tokens == 60
    _check_estimated_row(gw, key_id, kind, text, record)


@pytest.mark.parametrize("kind", KINDS)
def test_body_without_usage_is_estimated(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]], kind: str
) -> None:
    client, counter = make_client(kind, gw.create_key(name=f"nousage-body-{kind}"))
    key_id = gw.last_key_id
    tag, headers = tagged({"x-sim-no-usage": "1", "x-sim-output-tokens": "60"})
    body = request_body(kind, stream=False)
    del body["stream"]
    if kind == "chat":
        reply = client.chat.completions.create(**body, extra_headers=headers)
        assert reply.usage is None
        text = reply.choices[0].message.content
    elif kind == "responses":
        reply = client.responses.create(**body, extra_headers=headers)
        text = reply.output_text
    else:
        reply = client.messages.create(**body, extra_headers=headers)
        text = reply.content[0].text
    assert counter.count == 1
    record = the_record(gw, tag)
    assert record.outcome == sim_records.OK
    _check_estimated_row(gw, key_id, kind, text, record)


def _check_estimated_row(
    gw: GatewayHarness, key_id: str, kind: str, text: str, record: sim_records.RequestRecord
) -> None:
    row = the_row(gw, key_id)
    assert row.status == 200
    assert row.usage_estimated is True
    assert row.error is None
    assert row.upstream_request_id == record.request_id
    # output: the text the client got, counted the gateway's way; close to the truth
    assert row.output_tokens == count_output_text(MODEL[kind], text).tokens
    if kind == "anthropic":
        # Claude's tokenizer is private: an upper bound, never below the real count
        assert record.output_tokens <= row.output_tokens <= 3 * record.output_tokens
        assert row.input_tokens >= record.input_tokens
    else:
        assert record.output_tokens <= row.output_tokens <= 2 * record.output_tokens
        assert row.input_tokens == expected_openai_input(kind)
    assert row.cost_nanos > 0


# --------------------------------------------------------------------- server tools cut short

SEARCH = [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]
SEARCH_FEE_NANOS = 10_000_000  # $0.01 a search (claude-haiku-4-5)
# message_start, then 5 events per search (its use: start, query, stop; its result: start,
# stop): cut after 11, both searches have been made and relayed, before any text.
BOTH_SEARCHES = 11


@pytest.mark.parametrize("how", ["dies", "error-event", "client-leaves"])
def test_searches_made_before_a_stream_ends_early_are_charged(gw: GatewayHarness, how: str) -> None:
    """A stream that ends early is charged from what it relayed: the searches the client
    saw made (each ``server_tool_use`` block followed by its result block) are billed by
    Anthropic whether or not the stream reaches its closing ``message_delta``, which alone
    counts them in ``usage.server_tool_use``."""
    secret = gw.create_key(name=f"search-cut-{how}")
    key_id = gw.last_key_id
    faults = {"x-sim-server-tool-uses": "2"}
    if how == "dies":
        faults["x-sim-die-after-chunks"] = str(BOTH_SEARCHES)
    elif how == "error-event":
        faults["x-sim-error-after-chunks"] = str(BOTH_SEARCHES)
    else:
        faults["x-sim-chunk-delay-ms"] = "20"
    tag, headers = tagged(faults)
    headers |= {"x-api-key": secret, "anthropic-version": "2023-06-01"}
    body = request_body("anthropic", stream=True) | {"tools": SEARCH}
    results = 0
    with (
        httpx2.Client(base_url=gw.url, timeout=10) as http,
        http.stream("POST", "/v1/messages", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            results += '"content_block":{"type":"web_search_tool_result"' in line
            if how == "client-leaves" and results == 2:
                break
    assert results == 2
    record = the_record(gw, tag)
    assert gw.wait_for(lambda: record.finished)
    assert record.server_tool_uses == {"web_search": 2}

    row = the_row(gw, key_id)
    assert row.usage_estimated is True
    assert row.client_disconnected is (how == "client-leaves")
    assert row.tool_calls == (("web_search", 2),)
    assert row.cost_nanos > 2 * SEARCH_FEE_NANOS


# --------------------------------------------------------------------- afterwards


def test_gateway_healthy_and_ledger_consistent_afterwards(
    gw: GatewayHarness, make_client: Callable[..., tuple[Any, Counter]]
) -> None:
    with httpx2.Client(base_url=gw.url) as http:
        assert http.get("/healthz").status_code == 200
    client, counter = make_client("anthropic", gw.create_key(name="mid-after"))
    key_id = gw.last_key_id
    with open_stream("anthropic", client, {}) as stream:
        text = "".join(text_of("anthropic", event) for event in stream)
    assert text
    assert counter.count == 1
    row = the_row(gw, key_id)
    assert row.status == 200
    assert not row.usage_estimated
    assert row.error is None
    assert gw.wait_for(lambda: gw.gateway.inflight == 0)
    rows = gw.ledger()
    ids = [row.upstream_request_id for row in rows if row.upstream_request_id]
    assert len(ids) == len(set(ids))
    upstream = list(gw.sim.records)
    for record in upstream:
        assert record.finished, record.to_json()
        if record.stream or record.outcome in (sim_records.OK, sim_records.ERROR):
            assert ids.count(record.request_id) == 1, record.to_json()
    assert len(rows) == len(upstream)
