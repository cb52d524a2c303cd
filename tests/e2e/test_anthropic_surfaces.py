"""End to end: the real ``anthropic`` SDK (and raw HTTP, as Claude Code sends it) against the
running gateway, which talks to the simulator.

Anthropic's ``input_tokens`` exclude both cache fields; spendgate's ledger ``input_tokens``
include them (src/spendgate/domain/usage.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import orjson
import pytest

from harness import SIM_SECRET_ANTHROPIC, GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage
from spendgate.simulator import RequestRecord

MODEL = "claude-sonnet-4-6"
PROMPT = (
    "Summarise the plot of a short story about a lighthouse keeper who finds a message "
    "in a bottle, in three sentences."
)
MESSAGES: list[Any] = [{"role": "user", "content": PROMPT}]
CACHE_HEADERS = {
    "x-sim-cached-tokens": "4",
    "x-sim-cache-write-tokens": "6",
    "x-sim-cache-write-1h-tokens": "2",
}
IDENTITY = {"team": "web", "user": "bob", "service": "assistant", "tags": ["e2e", "anthropic"]}


# ----------------------------------------------------------------------------- helpers


def new_key(gw: GatewayHarness) -> tuple[str, str]:
    secret = gw.create_key(**IDENTITY)
    return secret, gw.last_key_id


class Capture:
    """Records the headers the SDK actually put on the wire (an httpx request hook)."""

    def __init__(self) -> None:
        self.headers: list[httpx2.Headers] = []

    def __call__(self, request: httpx2.Request) -> None:
        self.headers.append(request.headers)

    async def hook(self, request: httpx2.Request) -> None:
        self.headers.append(request.headers)


def sync_client(
    gw: GatewayHarness, capture: Capture | None = None, **auth: str
) -> anthropic.Anthropic:
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [capture]} if capture else {}
    return anthropic.Anthropic(
        base_url=gw.url,
        max_retries=0,
        timeout=10,
        http_client=httpx2.Client(event_hooks=hooks),
        **auth,  # type: ignore[arg-type]
    )


def async_client(
    gw: GatewayHarness, capture: Capture | None = None, **auth: str
) -> anthropic.AsyncAnthropic:
    hooks: dict[str, list[Callable[..., Any]]] = {"request": [capture.hook]} if capture else {}
    return anthropic.AsyncAnthropic(
        base_url=gw.url,
        max_retries=0,
        timeout=10,
        http_client=httpx2.AsyncClient(event_hooks=hooks),
        **auth,  # type: ignore[arg-type]
    )


def only_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def record_of(gw: GatewayHarness, row: LedgerRow, secret: str) -> RequestRecord:
    assert row.upstream_request_id is not None
    found = [r for r in list(gw.sim.records) if r.request_id == row.upstream_request_id]
    assert len(found) == 1, f"no simulator record for {row.upstream_request_id}"
    record = found[0]
    assert gw.wait_for(lambda: record.finished)
    assert record.outcome == "ok"
    # the provider credential went upstream, the caller's gateway key did not
    assert record.headers["x-api-key"] == SIM_SECRET_ANTHROPIC
    assert "authorization" not in record.headers
    assert all(secret not in value for value in record.headers.values())
    return record


def anthropic_usage(reported: dict[str, Any]) -> Usage:
    """Anthropic usage in spendgate's normal form, read independently of spendgate's parser."""
    read = reported.get("cache_read_input_tokens") or 0
    write = reported.get("cache_creation_input_tokens") or 0
    write_1h = (reported.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0
    return Usage(
        input_tokens=reported["input_tokens"] + read + write,
        output_tokens=reported["output_tokens"],
        cached_input_tokens=read,
        cache_write_tokens=write,
        cache_write_1h_tokens=write_1h,
    )


def check_row(gw: GatewayHarness, row: LedgerRow, record: RequestRecord, streamed: bool) -> None:
    reported = record.usage_reported
    assert reported is not None
    usage = anthropic_usage(reported)
    assert reported["input_tokens"] > 0
    assert row.input_tokens == record.input_tokens  # the simulator's ground truth
    assert (
        row.input_tokens,
        row.cached_input_tokens,
        row.cache_write_tokens,
        row.output_tokens,
        row.reasoning_tokens,
    ) == (
        usage.input_tokens,
        usage.cached_input_tokens,
        usage.cache_write_tokens,
        usage.output_tokens,
        0,
    )
    price = gw.gateway.prices.get(MODEL)
    assert price is not None
    assert row.cost_nanos == cost_of(usage, price) > 0
    assert row.surface == "anthropic.messages"
    assert row.streamed is streamed
    assert row.usage_estimated is False
    assert row.client_disconnected is False
    assert (row.status, row.error) == (200, None)
    assert (row.requested_model, row.served_model, row.provider) == (MODEL, MODEL, "anthropic")
    assert (row.user, row.service, row.team, row.org) == ("bob", "assistant", "web", "acme")
    assert row.tags == ("e2e", "anthropic")


def assert_cache_columns(row: LedgerRow, record: RequestRecord) -> None:
    """CACHE_HEADERS: 4 read, 6 written (5 min) + 2 written (1 h); sonnet's cache rates."""
    assert record.usage_reported is not None
    assert record.usage_reported["cache_read_input_tokens"] == 4
    assert record.usage_reported["cache_creation_input_tokens"] == 8
    assert (row.cached_input_tokens, row.cache_write_tokens) == (4, 8)
    uncached = record.usage_reported["input_tokens"]
    assert row.input_tokens == uncached + 12
    # catalog, nanos per token: input 3000, cache read 300, write 3750, 1h write 6000, out 15000
    expected = uncached * 3000 + 4 * 300 + 6 * 3750 + 2 * 6000 + row.output_tokens * 15000
    assert row.cost_nanos == expected


def assert_bearer(capture: Capture, secret: str) -> None:
    """anthropic 2.x sends the key as a Bearer token, for api_key= and auth_token= alike."""
    assert len(capture.headers) == 1
    sent = capture.headers[0]
    assert sent["authorization"] == f"Bearer {secret}"
    assert "x-api-key" not in sent


# ----------------------------------------------------------------------------- messages


def test_messages_sync_api_key(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    capture = Capture()
    with sync_client(gw, capture, api_key=secret) as client:
        message = client.messages.create(
            model=MODEL, max_tokens=200, messages=MESSAGES, extra_headers=CACHE_HEADERS
        )
    assert_bearer(capture, secret)
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert message.usage.to_dict() == record.usage_reported
    assert message._request_id == record.request_id
    assert message.content[0].type == "text"
    check_row(gw, row, record, streamed=False)
    assert_cache_columns(row, record)


async def test_messages_async_auth_token(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    capture = Capture()
    async with async_client(gw, capture, auth_token=secret) as client:
        message = await client.messages.create(model=MODEL, max_tokens=200, messages=MESSAGES)
    assert_bearer(capture, secret)
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert message.usage.to_dict() == record.usage_reported
    check_row(gw, row, record, streamed=False)
    assert (row.cached_input_tokens, row.cache_write_tokens) == (0, 0)


def test_messages_raw_x_api_key(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    body = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES}
    headers = {"x-api-key": secret, "anthropic-version": "2023-06-01", **CACHE_HEADERS}
    with httpx2.Client(timeout=10) as http:
        response = http.post(f"{gw.url}/v1/messages", json=body, headers=headers)
    assert response.status_code == 200, response.text
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert record.headers["anthropic-version"] == "2023-06-01"
    assert response.json()["usage"] == record.usage_reported
    assert response.headers["request-id"] == record.request_id
    check_row(gw, row, record, streamed=False)
    assert_cache_columns(row, record)


def test_messages_raw_wrong_key_is_refused_before_upstream(gw: GatewayHarness) -> None:
    before = len(gw.sim.records)
    body = {"model": MODEL, "max_tokens": 100, "messages": MESSAGES}
    with httpx2.Client(timeout=10) as http:
        response = http.post(
            f"{gw.url}/v1/messages",
            json=body,
            headers={"x-api-key": "sk-wrong", "anthropic-version": "2023-06-01"},
        )
    assert response.status_code == 401
    assert response.json()["type"] == "error"
    assert response.json()["error"]["type"] == "authentication_error"
    assert len(gw.sim.records) == before


def test_messages_sync_stream_final_message(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with (
        sync_client(gw, api_key=secret) as client,
        client.messages.stream(
            model=MODEL, max_tokens=200, messages=MESSAGES, extra_headers=CACHE_HEADERS
        ) as stream,
    ):
        events = list(stream)
        final = stream.get_final_message()
    kinds = [event.type for event in events]
    assert kinds[0] == "message_start"
    assert "content_block_delta" in kinds
    assert kinds[-1] == "message_stop"
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert record.body["stream"] is True
    assert final.usage.to_dict() == record.usage_reported
    assert final.stop_reason == "end_turn"
    check_row(gw, row, record, streamed=True)
    assert_cache_columns(row, record)


async def test_messages_async_stream_text_stream(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with (
        async_client(gw, auth_token=secret) as client,
        client.messages.stream(model=MODEL, max_tokens=200, messages=MESSAGES) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert final.usage.to_dict() == record.usage_reported
    check_row(gw, row, record, streamed=True)


def test_messages_sync_stream_text_stream(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with (
        sync_client(gw, auth_token=secret) as client,
        client.messages.stream(model=MODEL, max_tokens=200, messages=MESSAGES) as stream,
    ):
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text
    assert final.content[0].type == "text"
    assert final.content[0].text == text
    row = only_row(gw, key_id)
    check_row(gw, row, record_of(gw, row, secret), streamed=True)


async def test_messages_async_create_stream_raw_events(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with async_client(gw, api_key=secret) as client:
        stream = await client.messages.create(
            model=MODEL, max_tokens=200, messages=MESSAGES, stream=True, extra_headers=CACHE_HEADERS
        )
        async with stream:
            events = [event async for event in stream]
    start = events[0]
    assert start.type == "message_start"
    delta = [event for event in events if event.type == "message_delta"]
    assert len(delta) == 1
    assert events[-1].type == "message_stop"
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert record.usage_reported is not None
    assert start.message.usage.cache_read_input_tokens == 4
    assert delta[0].usage.output_tokens == record.usage_reported["output_tokens"]
    check_row(gw, row, record, streamed=True)
    assert_cache_columns(row, record)


def test_count_tokens_is_free(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with sync_client(gw, api_key=secret) as client:
        counted = client.messages.count_tokens(model=MODEL, messages=MESSAGES, system="be brief")
    row = only_row(gw, key_id)
    assert row.upstream_request_id is not None
    record = next(r for r in gw.sim.records if r.request_id == row.upstream_request_id)
    assert record.path == "/v1/messages/count_tokens"
    assert record.headers["x-api-key"] == SIM_SECRET_ANTHROPIC
    assert counted.input_tokens == record.input_tokens > 0
    assert row.surface == "anthropic.count_tokens"
    assert row.cost_nanos == 0
    assert (row.status, row.streamed, row.usage_estimated) == (200, False, False)
    assert (row.user, row.team, row.org) == ("bob", "web", "acme")


def test_anthropic_models_list_shows_only_claude(gw: GatewayHarness) -> None:
    secret, _ = new_key(gw)
    with sync_client(gw, api_key=secret) as client:
        ids = [model.id for model in client.models.list()]
    assert sorted(ids) == ["claude-haiku-4-5", "claude-sonnet-4-6"]


# ----------------------------------------------------------------------------- Claude Code

CLAUDE_CODE_BETA = "claude-code-20250219,interleaved-thinking-2025-05-14,effort-2025-11-24"


def _sse_events(raw: bytes) -> list[tuple[str | None, dict[str, Any]]]:
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        if not block.strip():
            continue
        name, data = None, None
        for line in block.split(b"\n"):
            if line.startswith(b"event:"):
                name = line[6:].strip().decode()
            elif line.startswith(b"data:"):
                data = orjson.loads(line[5:])
        assert data is not None, block
        events.append((name, data))
    return events


@pytest.mark.parametrize("stream", [False, True])
def test_claude_code_beta_path(gw: GatewayHarness, stream: bool) -> None:
    secret, key_id = new_key(gw)
    body = {
        "model": MODEL,
        "max_tokens": 32000,
        "stream": stream,
        "messages": MESSAGES,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}
        ],
        "metadata": {"user_id": '{"device_id":"d","session_id":"s"}'},
    }
    headers = {
        "authorization": f"Bearer {secret}",
        "anthropic-version": "2023-06-01",
        "anthropic-beta": CLAUDE_CODE_BETA,
        "anthropic-dangerous-direct-browser-access": "true",
        "x-app": "cli",
        "accept": "application/json",
        **CACHE_HEADERS,
    }
    with httpx2.Client(timeout=10) as http:
        response = http.post(f"{gw.url}/v1/messages?beta=true", json=body, headers=headers)
    assert response.status_code == 200, response.text
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    assert record.path == "/v1/messages"
    assert record.query == "beta=true"
    assert record.headers["anthropic-beta"] == CLAUDE_CODE_BETA
    assert record.headers["anthropic-version"] == "2023-06-01"
    assert record.headers["x-app"] == "cli"
    assert record.body == body
    if stream:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _sse_events(response.content)
        assert all(name == data["type"] for name, data in events)
        assert events[-1][0] == "message_stop"
    else:
        assert response.json()["usage"] == record.usage_reported
    check_row(gw, row, record, streamed=stream)
    assert_cache_columns(row, record)


@pytest.mark.parametrize("stream", [False, True])
def test_a_server_side_compaction_is_billed(gw: GatewayHarness, stream: bool) -> None:
    """With ``context_management`` compaction, Anthropic first runs a compaction over the
    context, and reports its tokens only as a ``compaction`` entry of ``usage.iterations``:
    they are "not included in the top-level usage fields" (the SDK's ``BetaUsage``), and
    they are billed. The ledger charges both."""
    secret, key_id = new_key(gw)
    compaction = 18_000
    body = {
        "model": MODEL,
        "max_tokens": 1000,
        "stream": stream,
        "messages": MESSAGES,
        "context_management": {"edits": [{"type": "compact_20260112"}]},
    }
    headers = {
        "x-api-key": secret,
        "anthropic-version": "2023-06-01",
        "anthropic-beta": "compact-2026-01-12",
        "x-sim-compaction-tokens": str(compaction),
    }
    with httpx2.Client(timeout=10) as http:
        response = http.post(f"{gw.url}/v1/messages?beta=true", json=body, headers=headers)
    assert response.status_code == 200, response.text
    row = only_row(gw, key_id)
    record = record_of(gw, row, secret)
    reported = record.usage_reported
    assert reported is not None
    (first, _) = reported["iterations"]
    assert (first["type"], first["input_tokens"]) == ("compaction", compaction)
    top = anthropic_usage(reported)
    assert (row.input_tokens, row.output_tokens) == (record.input_tokens, record.output_tokens)
    assert row.input_tokens == top.input_tokens + compaction
    assert row.output_tokens == top.output_tokens + first["output_tokens"]
    billed = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    price = gw.gateway.prices.get(MODEL)
    assert price is not None
    assert row.cost_nanos == cost_of(billed, price)
    assert row.usage_estimated is False


def test_anthropic_models_retrieve(gw: GatewayHarness) -> None:
    """``models.retrieve`` (``GET /v1/models/{id}``) in Anthropic's shape; a model of
    another dialect is not found there, as it is not listed."""
    secret, _ = new_key(gw)
    with sync_client(gw, api_key=secret) as client:
        model = client.models.retrieve("claude-haiku-4-5")
        assert (model.type, model.id) == ("model", "claude-haiku-4-5")
        with pytest.raises(anthropic.NotFoundError) as caught:
            client.models.retrieve("gpt-4o-mini")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
