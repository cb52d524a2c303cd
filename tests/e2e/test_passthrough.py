"""End to end: what passes through the gateway must arrive unchanged, in both directions.

Requests: unknown fields, exact bytes, headers, the query string; only the model name (for
an alias) and the upstream credential change. Responses: upstream headers, SSE ``event:``
lines, and streams relayed as they arrive, not buffered.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage
from spendgate.simulator import RequestRecord

FUTURE = {"a": [1, 2.5, "é"]}
MESSAGES: list[Any] = [{"role": "user", "content": "Say something nice about tea."}]
ANTHROPIC_VERSION = {"anthropic-version": "2023-06-01"}


# ----------------------------------------------------------------------------- helpers


def new_key(gw: GatewayHarness) -> tuple[str, str]:
    secret = gw.create_key(team="platform", user="carol", service="proxy-tests")
    return secret, gw.last_key_id


def only_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def record_of(gw: GatewayHarness, row: LedgerRow) -> RequestRecord:
    assert row.upstream_request_id is not None
    found = [r for r in list(gw.sim.records) if r.request_id == row.upstream_request_id]
    assert len(found) == 1, f"no simulator record for {row.upstream_request_id}"
    assert gw.wait_for(lambda: found[0].finished)
    return found[0]


def assert_no_gateway_secret(record: RequestRecord, secret: str) -> None:
    assert all(secret not in value for value in record.headers.values())
    assert secret.encode() not in record.raw_body


def openai_client(gw: GatewayHarness, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=10)


# ----------------------------------------------------------------------------- request bodies


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_body_field_reaches_upstream_openai(gw: GatewayHarness, stream: bool) -> None:
    # a stream without include_usage is the case where the gateway re-serializes the body
    secret, key_id = new_key(gw)
    with openai_client(gw, secret) as client:
        if stream:
            with client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body={"x_future": FUTURE}
            ) as chunks:
                assert list(chunks)
        else:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, extra_body={"x_future": FUTURE}
            )
    record = record_of(gw, only_row(gw, key_id))
    assert record.body["x_future"] == FUTURE
    assert record.body["messages"] == MESSAGES
    if stream:
        assert record.body["stream_options"] == {"include_usage": True}


def test_unknown_body_field_reaches_upstream_anthropic(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0, timeout=10) as client:
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=50,
            messages=MESSAGES,
            extra_body={"x_future": FUTURE},
        )
    record = record_of(gw, only_row(gw, key_id))
    assert record.body["x_future"] == FUTURE


# Bytes no serializer would produce: odd spacing, key order, escapes, 2.50 and 1e2.
RAW_CHAT = (
    b'{ "messages" : [ {"role":"user", "content":"caf\\u00e9 \xc3\xa9 \\ud83d\\ude00 \\/"} ],\n'
    b'  "model":"gpt-4o-mini",  "temperature": 0.50, "x_future": {"a": [1, 2.50, "\\u00e9", 1e2]},'
    b'\t"max_tokens": 40 }\n'
)
RAW_RESPONSES = b'{"input":"hi \\u00e9","model":"gpt-4o-mini" , "x_future":{"n":1.0}}'
RAW_EMBEDDINGS = b'{"model":"text-embedding-3-small","input":["a","b"],"encoding_format":"float"}'
RAW_MESSAGES = (
    b'{"max_tokens":30, "model":"claude-haiku-4-5","messages":[{"role":"user",'
    b'"content":"\\u00e9t\\u00e9"}], "x_future" : [2.50]}'
)
RAW_MESSAGES_STREAM = RAW_MESSAGES[:-1] + b', "stream": true}'
RAW_CHAT_STREAM_WITH_USAGE = (
    b'{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},'
    b'"messages":[{"role":"user","content":"hi"}],"x":1.0}'
)


@pytest.mark.parametrize(
    ("path", "raw", "extra_headers"),
    [
        ("/v1/chat/completions", RAW_CHAT, {}),
        ("/v1/responses", RAW_RESPONSES, {}),
        ("/v1/embeddings", RAW_EMBEDDINGS, {}),
        ("/v1/messages", RAW_MESSAGES, ANTHROPIC_VERSION),
        ("/v1/messages", RAW_MESSAGES_STREAM, ANTHROPIC_VERSION),
        ("/v1/chat/completions", RAW_CHAT_STREAM_WITH_USAGE, {}),
        ("/v1/messages/count_tokens", RAW_MESSAGES, ANTHROPIC_VERSION),
    ],
    ids=["chat", "responses", "embeddings", "messages", "messages-stream", "chat-stream", "count"],
)
def test_body_passes_through_as_read(
    gw: GatewayHarness, path: str, raw: bytes, extra_headers: dict[str, str]
) -> None:
    """Every field, unknown ones too, in the client's order and with its values; the bytes
    are the body serialized again from what the gateway read (`test_upstream_body.py`:
    what a key sent twice would otherwise do), so escapes and spacing may differ."""
    secret, key_id = new_key(gw)
    headers = {
        "authorization": f"Bearer {secret}",
        "content-type": "application/json",
        **extra_headers,
    }
    with httpx2.Client(timeout=10) as http:
        response = http.post(gw.url + path, content=raw, headers=headers)
    assert response.status_code == 200, response.text
    record = record_of(gw, only_row(gw, key_id))
    assert record.path == path
    assert record.body == orjson.loads(raw)
    assert list(record.body) == list(orjson.loads(raw))
    assert record.raw_body == orjson.dumps(orjson.loads(raw))


@pytest.mark.parametrize("alias", ["house-model", "mystery-model"])
@pytest.mark.parametrize("stream", [False, True])
def test_alias_is_rewritten_and_nothing_else(gw: GatewayHarness, alias: str, stream: bool) -> None:
    secret, key_id = new_key(gw)
    body: dict[str, Any] = {
        "messages": MESSAGES,
        "model": alias,
        "temperature": 0.25,
        "x_future": FUTURE,
        "max_completion_tokens": 64,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    with httpx2.Client(timeout=10) as http:
        response = http.post(
            gw.url + "/v1/chat/completions",
            content=orjson.dumps(body),
            headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
        )
    assert response.status_code == 200, response.text
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert record.body == {**body, "model": "gpt-4o-mini"}
    assert list(record.body) == list(body)  # same fields, same order
    assert record.raw_body == orjson.dumps({**body, "model": "gpt-4o-mini"})
    assert (row.requested_model, row.served_model) == (alias, "gpt-4o-mini")
    assert record.usage_reported is not None
    reported = record.usage_reported
    usage = Usage(
        input_tokens=reported["prompt_tokens"], output_tokens=reported["completion_tokens"]
    )
    price = gw.gateway.prices.get(alias)
    assert price is not None
    assert row.cost_nanos == cost_of(usage, price) > 0
    if alias == "house-model":
        # the model's own config price: 1 $/M input, 2 $/M output
        assert row.cost_nanos == usage.input_tokens * 1_000 + usage.output_tokens * 2_000
    else:
        # no price of its own: priced under its upstream name (pricing/catalog.py)
        upstream_price = gw.gateway.prices.get("gpt-4o-mini")
        assert upstream_price is not None
        assert price.rates == upstream_price.rates
        assert row.cost_nanos == usage.input_tokens * 150 + usage.output_tokens * 600


def test_anthropic_alias_free_body_is_forwarded_byte_for_byte_with_query(
    gw: GatewayHarness,
) -> None:
    secret, key_id = new_key(gw)
    with httpx2.Client(timeout=10) as http:
        response = http.post(
            gw.url + "/v1/messages?beta=true&x=%C3%A9",
            content=RAW_MESSAGES,
            headers={"x-api-key": secret, "content-type": "application/json", **ANTHROPIC_VERSION},
        )
    assert response.status_code == 200, response.text
    record = record_of(gw, only_row(gw, key_id))
    assert record.query == "beta=true&x=é"  # aiohttp shows the query decoded
    assert record.raw_body == orjson.dumps(orjson.loads(RAW_MESSAGES))


# ---------------------------------------------------------------------- credentials & headers


def test_openai_upstream_gets_the_provider_credential_only(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = {
        "authorization": f"Bearer {secret}",
        "x-api-key": secret,
        "api-key": secret,
        "x-spendgate-debug": "1",
        "x-trace-id": "trace-123",
        "openai-beta": "assistants=v2",
    }
    with httpx2.Client(timeout=10) as http:
        response = http.post(
            gw.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers=headers,
        )
    assert response.status_code == 200, response.text
    record = record_of(gw, only_row(gw, key_id))
    assert record.headers["authorization"] == f"Bearer {SIM_SECRET_OPENAI}"
    assert "x-api-key" not in record.headers
    assert "api-key" not in record.headers
    assert "x-spendgate-debug" not in record.headers
    assert record.headers["x-trace-id"] == "trace-123"
    assert record.headers["openai-beta"] == "assistants=v2"
    assert_no_gateway_secret(record, secret)


def test_anthropic_upstream_gets_the_provider_credential_only(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    sent: list[httpx2.Headers] = []
    with anthropic.Anthropic(
        api_key=secret,
        base_url=gw.url,
        max_retries=0,
        timeout=10,
        http_client=httpx2.Client(event_hooks={"request": [lambda r: sent.append(r.headers)]}),
    ) as client:
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=30,
            messages=MESSAGES,
            extra_headers={"x-api-key": secret, "anthropic-beta": "some-beta-2026-01-01"},
        )
    record = record_of(gw, only_row(gw, key_id))
    assert record.headers["x-api-key"] == SIM_SECRET_ANTHROPIC
    assert "authorization" not in record.headers
    assert record.headers["anthropic-beta"] == "some-beta-2026-01-01"
    # whatever version the SDK sends is passed on, not replaced by the gateway's default
    assert record.headers["anthropic-version"] == sent[0]["anthropic-version"]
    assert_no_gateway_secret(record, secret)


def test_a_header_sent_twice_reaches_upstream_whole(gw: GatewayHarness) -> None:
    """Two ``anthropic-beta`` lines (a client's own betas, and one added through
    ``ANTHROPIC_CUSTOM_HEADERS`` or a proxy) mean both betas (RFC 9110 §5.3: a list-valued
    field sent twice is the comma-joined list): neither may be lost on the way up."""
    secret, key_id = new_key(gw)
    body = {"model": "claude-haiku-4-5", "max_tokens": 30, "messages": MESSAGES}
    headers = [
        ("x-api-key", secret),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-beta", "interleaved-thinking-2025-05-14,effort-2025-11-24"),
        ("Anthropic-Beta", "context-1m-2025-08-07"),
    ]
    with httpx2.Client(base_url=gw.url, timeout=10) as http:
        response = http.post("/v1/messages?beta=true", json=body, headers=headers)
    assert response.status_code == 200, response.text
    record = record_of(gw, only_row(gw, key_id))
    assert record.headers["anthropic-beta"] == (
        "interleaved-thinking-2025-05-14,effort-2025-11-24, context-1m-2025-08-07"
    )
    assert record.headers["x-api-key"] == SIM_SECRET_ANTHROPIC


@pytest.mark.parametrize("stream", [False, True])
def test_openai_response_headers_reach_the_client(gw: GatewayHarness, stream: bool) -> None:
    secret, key_id = new_key(gw)
    with openai_client(gw, secret) as client:
        if stream:
            with client.chat.completions.with_streaming_response.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            ) as raw:
                headers = raw.headers
                list(raw.iter_lines())
        else:
            raw_response = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=MESSAGES
            )
            headers = raw_response.headers
            assert raw_response.parse()._request_id == headers["x-request-id"]
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert headers["x-request-id"] == record.request_id
    assert headers["x-spendgate-request-id"] == row.request_id
    assert headers["x-ratelimit-limit-requests"] == "5000"
    assert headers["openai-version"] == "2020-10-01"
    assert headers["content-type"].startswith("text/event-stream" if stream else "application/json")


@pytest.mark.parametrize("stream", [False, True])
def test_anthropic_response_headers_reach_the_client(gw: GatewayHarness, stream: bool) -> None:
    secret, key_id = new_key(gw)
    with anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0, timeout=10) as client:
        if stream:
            with client.messages.with_streaming_response.create(
                model="claude-haiku-4-5", max_tokens=30, messages=MESSAGES, stream=True
            ) as raw:
                headers = raw.headers
                list(raw.iter_lines())
        else:
            raw_response = client.messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=30, messages=MESSAGES
            )
            headers = raw_response.headers
            assert raw_response.parse()._request_id == headers["request-id"]
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert headers["request-id"] == record.request_id
    assert headers["x-spendgate-request-id"] == row.request_id
    assert headers["anthropic-ratelimit-requests-limit"] == "1000"


# ----------------------------------------------------------------------------- SSE fidelity


@pytest.mark.parametrize(
    ("kind", "header"), [("openai", "x-request-id"), ("anthropic", "request-id")]
)
def test_request_ids_the_provider_its_own_spendgate_its_own(
    gw: GatewayHarness, kind: str, header: str
) -> None:
    """A relayed answer (its 5xx included) keeps the provider's request id in the provider's
    header, untouched; spendgate's own id is always `x-spendgate-request-id`, and an error
    spendgate raises itself (nothing relayed) carries spendgate's id in both."""
    secret, key_id = new_key(gw)
    path = "/v1/chat/completions" if kind == "openai" else "/v1/messages"
    model = "gpt-4o-mini" if kind == "openai" else "claude-haiku-4-5"
    body = {"model": model, "max_tokens": 10, "messages": MESSAGES}
    headers = {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    served = httpx2.post(gw.url + path, content=orjson.dumps(body), headers=headers)
    failed = httpx2.post(
        gw.url + path, content=orjson.dumps(body), headers={**headers, "x-sim-status": "503"}
    )
    refused = httpx2.post(
        gw.url + path, content=orjson.dumps({**body, "model": "no-such-model"}), headers=headers
    )
    assert (served.status_code, failed.status_code, refused.status_code) == (200, 503, 404)
    rows = {row.request_id: row for row in gw.ledger(key_id)}
    for relayed in (served, failed):
        row = rows[relayed.headers["x-spendgate-request-id"]]
        assert relayed.headers[header] == row.upstream_request_id == record_of(gw, row).request_id
        assert relayed.headers[header] != row.request_id
    assert refused.headers[header] == refused.headers["x-spendgate-request-id"]
    assert refused.headers[header].startswith("req_")
    assert refused.headers["x-spendgate-request-id"] not in rows  # refused before a row


def _events(raw: bytes) -> list[list[bytes]]:
    blocks = raw.split(b"\n\n")
    assert blocks[-1] == b"", "the stream must end with a complete event"
    return [block.split(b"\n") for block in blocks[:-1]]


def test_anthropic_sse_keeps_event_lines(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    body = {
        "model": "claude-haiku-4-5",
        "max_tokens": 2000,  # above the thinking budget, as Anthropic requires
        "stream": True,
        "messages": MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    sim_headers = {"x-sim-reasoning-tokens": "6", "x-sim-cached-tokens": "2"}
    with httpx2.Client(timeout=10) as http:
        with http.stream(
            "POST",
            gw.url + "/v1/messages",
            json=body,
            headers={"authorization": f"Bearer {secret}", **ANTHROPIC_VERSION, **sim_headers},
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            via_gateway = b"".join(response.iter_bytes())
        # the same request straight to the simulator: what the gateway had to relay
        direct = http.post(
            gw.sim.url + "/v1/messages",
            json=body,
            headers={"x-api-key": SIM_SECRET_ANTHROPIC, **ANTHROPIC_VERSION, **sim_headers},
        ).content
    record = record_of(gw, only_row(gw, key_id))
    events = _events(via_gateway)
    for lines in events:
        assert len(lines) == 2, lines
        assert lines[0].startswith(b"event: ")
        assert lines[1].startswith(b"data: ")
        assert orjson.loads(lines[1][6:])["type"] == lines[0][7:].decode()
    names = [lines[0][7:].decode() for lines in events]
    assert names[0] == "message_start"
    assert names[-1] == "message_stop"
    assert {"ping", "content_block_start", "content_block_delta", "message_delta"} <= set(names)
    assert len(events) == record.chunks_sent
    direct_names = [lines[0][7:].decode() for lines in _events(direct)]
    assert names == direct_names
    # byte for byte the simulator's stream, but for the message id
    gateway_id = orjson.loads(events[0][1][6:])["message"]["id"]
    direct_id = orjson.loads(_events(direct)[0][1][6:])["message"]["id"]
    assert via_gateway.replace(gateway_id.encode(), direct_id.encode()) == direct


def test_responses_sse_keeps_event_lines(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with httpx2.Client(timeout=10) as http:
        response = http.post(
            gw.url + "/v1/responses",
            json={"model": "gpt-4o-mini", "input": "hello", "stream": True},
            headers={"authorization": f"Bearer {secret}"},
        )
    assert response.status_code == 200
    record = record_of(gw, only_row(gw, key_id))
    events = _events(response.content)
    assert len(events) == record.chunks_sent
    for index, lines in enumerate(events):
        assert len(lines) == 2
        assert lines[0].startswith(b"event: ")
        payload = orjson.loads(lines[1].removeprefix(b"data: "))
        assert payload["type"] == lines[0][7:].decode()
        assert payload["sequence_number"] == index
    assert events[-1][0] == b"event: response.completed"


def _arrivals(response: httpx2.Response) -> list[tuple[float, bytes]]:
    return [(time.monotonic(), line) for line in response.iter_lines() if line]


def test_openai_stream_is_relayed_incrementally(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = {
        "authorization": f"Bearer {secret}",
        "x-sim-chunk-delay-ms": "100",
        "x-sim-output-tokens": "12",  # role + 4 deltas + finish + usage + [DONE]: 8 events
    }
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    with (
        httpx2.Client(timeout=10) as http,
        http.stream(
            "POST", gw.url + "/v1/chat/completions", json=body, headers=headers
        ) as response,
    ):
        assert response.status_code == 200
        arrivals = _arrivals(response)
    record = record_of(gw, only_row(gw, key_id))
    assert record.chunks_sent == 8
    lines = [line for _, line in arrivals]
    assert lines[-1] == "data: [DONE]"
    assert len(lines) == 7  # the usage chunk the client did not ask for is gone
    first, last = arrivals[0][0], arrivals[-1][0]
    assert last - first > 0.3, f"stream was buffered: {last - first:.3f}s between first and last"
    # and every chunk came on its own, spread over the stream
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(arrivals)]
    assert sum(gap > 0.05 for gap in gaps) >= 4


def test_anthropic_stream_is_relayed_incrementally(gw: GatewayHarness) -> None:
    secret, _ = new_key(gw)
    headers = {
        "x-api-key": secret,
        "x-sim-chunk-delay-ms": "60",
        "x-sim-output-tokens": "9",
        **ANTHROPIC_VERSION,
    }
    body = {"model": "claude-haiku-4-5", "max_tokens": 100, "messages": MESSAGES, "stream": True}
    with (
        httpx2.Client(timeout=10) as http,
        http.stream("POST", gw.url + "/v1/messages", json=body, headers=headers) as response,
    ):
        assert response.status_code == 200
        arrivals = [(t, line) for t, line in _arrivals(response) if line.startswith("data:")]
    # message_start, block start, ping, 3 deltas, block stop, message_delta, message_stop
    assert len(arrivals) == 9
    assert arrivals[-1][0] - arrivals[0][0] > 0.3
