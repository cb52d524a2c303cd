"""End to end: the real ``openai`` SDK against the running gateway, which talks to the simulator.

Every request leaves exactly one ledger row; its token columns must equal the usage the
simulator reported (found through ``row.upstream_request_id == record.request_id``) and its
cost must be the price book's price of that usage.
"""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import openai
import pytest

from harness import SIM_SECRET_OPENAI, GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage
from spendgate.simulator import RequestRecord

MODEL = "gpt-4o-mini"
MESSAGES: list[Any] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "Tell me about the weather in Paris in spring, please."},
]
CACHE_HEADERS = {"x-sim-cached-tokens": "5", "x-sim-reasoning-tokens": "7"}
IDENTITY = {"team": "ml", "user": "alice", "service": "checkout", "tags": ["e2e", "openai"]}


# ----------------------------------------------------------------------------- helpers


def new_key(gw: GatewayHarness, **spec: Any) -> tuple[str, str]:
    secret = gw.create_key(**{**IDENTITY, **spec})
    return secret, gw.last_key_id


def sync_client(gw: GatewayHarness, secret: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=10)


def async_client(gw: GatewayHarness, secret: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(
        api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=10
    )


def only_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def record_of(gw: GatewayHarness, row: LedgerRow) -> RequestRecord:
    assert row.upstream_request_id is not None
    found = [r for r in list(gw.sim.records) if r.request_id == row.upstream_request_id]
    assert len(found) == 1, f"no simulator record for {row.upstream_request_id}"
    record = found[0]
    assert gw.wait_for(lambda: record.finished)
    assert record.outcome == "ok"
    assert record.headers["authorization"] == f"Bearer {SIM_SECRET_OPENAI}"
    return record


def chat_usage(reported: dict[str, Any]) -> Usage:
    """The simulator's CompletionUsage in spendgate's normal form, read independently."""
    prompt = reported.get("prompt_tokens_details") or {}
    completion = reported.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=reported["prompt_tokens"],
        output_tokens=reported["completion_tokens"],
        cached_input_tokens=prompt.get("cached_tokens", 0),
        cache_write_tokens=prompt.get("cache_write_tokens", 0),
        reasoning_tokens=completion.get("reasoning_tokens", 0),
    )


def responses_usage(reported: dict[str, Any]) -> Usage:
    inputs = reported.get("input_tokens_details") or {}
    outputs = reported.get("output_tokens_details") or {}
    return Usage(
        input_tokens=reported["input_tokens"],
        output_tokens=reported["output_tokens"],
        cached_input_tokens=inputs.get("cached_tokens", 0),
        cache_write_tokens=inputs.get("cache_write_tokens", 0),
        reasoning_tokens=outputs.get("reasoning_tokens", 0),
    )


def check_row(
    gw: GatewayHarness,
    row: LedgerRow,
    usage: Usage,
    *,
    surface: str,
    streamed: bool,
    model: str = MODEL,
) -> None:
    assert usage.input_tokens > 0
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
        usage.reasoning_tokens,
    )
    price = gw.gateway.prices.get(model)
    assert price is not None
    assert row.cost_nanos == cost_of(usage, price)
    if surface != "openai.embeddings":
        assert row.cost_nanos > 0
    assert row.surface == surface
    assert row.streamed is streamed
    assert row.usage_estimated is False
    assert row.client_disconnected is False
    assert row.status == 200
    assert row.error is None
    assert (row.requested_model, row.served_model, row.provider) == (model, model, "openai")
    assert (row.user, row.service, row.team, row.org) == ("alice", "checkout", "ml", "acme")
    assert row.tags == ("e2e", "openai")


def assert_cached_and_reasoning(row: LedgerRow) -> None:
    """The x-sim headers of CACHE_HEADERS, and gpt-4o-mini's discounted cached rate."""
    assert (row.cached_input_tokens, row.reasoning_tokens) == (5, 7)
    # catalog: input 0.15 $/M = 150 nanos/token, cached 75, output 600 (reasoning = output)
    uncached = row.input_tokens - 5
    assert row.cost_nanos == uncached * 150 + 5 * 75 + row.output_tokens * 600


# ----------------------------------------------------------------------------- chat


def test_chat_sync_non_streaming(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with sync_client(gw, secret) as client:
        completion = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, extra_headers=CACHE_HEADERS
        )
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert record.usage_reported is not None
    assert completion.usage is not None
    assert completion.usage.to_dict() == record.usage_reported
    assert completion._request_id == record.request_id
    assert completion.choices[0].message.content
    check_row(gw, row, chat_usage(record.usage_reported), surface="openai.chat", streamed=False)
    assert_cached_and_reasoning(row)
    assert "stream_options" not in record.body


async def test_chat_async_non_streaming(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with async_client(gw, secret) as client:
        completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert record.usage_reported is not None
    assert completion.usage is not None
    assert completion.usage.to_dict() == record.usage_reported
    check_row(gw, row, chat_usage(record.usage_reported), surface="openai.chat", streamed=False)
    assert (row.cached_input_tokens, row.reasoning_tokens) == (0, 0)


def _check_chat_stream(
    gw: GatewayHarness, key_id: str, chunks: list[Any], include_usage: bool
) -> RequestRecord:
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert record.usage_reported is not None
    # upstream always gets include_usage, whatever the client asked
    assert record.body["stream"] is True
    assert record.body["stream_options"]["include_usage"] is True
    usage_chunks = [chunk for chunk in chunks if not chunk.choices]
    if include_usage:
        assert len(usage_chunks) == 1
        assert chunks[-1] is usage_chunks[0]
        assert usage_chunks[0].usage.to_dict() == record.usage_reported
        assert all(chunk.usage is None for chunk in chunks[:-1])
    else:
        assert usage_chunks == []
        assert all(chunk.usage is None for chunk in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    check_row(gw, row, chat_usage(record.usage_reported), surface="openai.chat", streamed=True)
    return record


@pytest.mark.parametrize("include_usage", [None, False, True], ids=["absent", "false", "true"])
def test_chat_sync_streaming(gw: GatewayHarness, include_usage: bool | None) -> None:
    secret, key_id = new_key(gw)
    extra: dict[str, Any] = {}
    if include_usage is not None:
        extra["stream_options"] = {"include_usage": include_usage}
    with sync_client(gw, secret) as client:
        stream = client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, extra_headers=CACHE_HEADERS, **extra
        )
        with stream:
            chunks = list(stream)
    record = _check_chat_stream(gw, key_id, chunks, include_usage is True)
    assert_cached_and_reasoning(only_row(gw, key_id))
    assert record.body["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize("include_usage", [False, True])
async def test_chat_async_streaming(gw: GatewayHarness, include_usage: bool) -> None:
    secret, key_id = new_key(gw)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    async with async_client(gw, secret) as client:
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, **extra
        )
        async with stream:
            chunks = [chunk async for chunk in stream]
    _check_chat_stream(gw, key_id, chunks, include_usage)


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_stream_helper_sync(gw: GatewayHarness, include_usage: bool) -> None:
    secret, key_id = new_key(gw)
    extra: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
    with (
        sync_client(gw, secret) as client,
        client.chat.completions.stream(
            model=MODEL, messages=MESSAGES, extra_headers=CACHE_HEADERS, **extra
        ) as stream,
    ):
        chunks = [event.chunk for event in stream if event.type == "chunk"]
        final = stream.get_final_completion()
    record = _check_chat_stream(gw, key_id, chunks, include_usage)
    assert_cached_and_reasoning(only_row(gw, key_id))
    assert final.choices[0].message.content
    if include_usage:
        assert final.usage is not None
        assert final.usage.to_dict() == record.usage_reported
    else:
        assert final.usage is None


async def test_chat_stream_helper_async(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with (
        async_client(gw, secret) as client,
        client.chat.completions.stream(
            model=MODEL, messages=MESSAGES, stream_options={"include_usage": True}
        ) as stream,
    ):
        chunks = [event.chunk async for event in stream if event.type == "chunk"]
        final = await stream.get_final_completion()
    record = _check_chat_stream(gw, key_id, chunks, include_usage=True)
    assert final.usage is not None
    assert final.usage.to_dict() == record.usage_reported


# ----------------------------------------------------------------------------- responses

INPUT = "Write two sentences about the sea."


def _check_response(gw: GatewayHarness, key_id: str, usage: Any, streamed: bool) -> None:
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert record.usage_reported is not None
    assert usage is not None
    assert usage.to_dict() == record.usage_reported
    assert record.body.get("stream", False) is streamed
    check_row(
        gw,
        row,
        responses_usage(record.usage_reported),
        surface="openai.responses",
        streamed=streamed,
    )


def test_responses_sync_non_streaming(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with sync_client(gw, secret) as client:
        response = client.responses.create(model=MODEL, input=INPUT, extra_headers=CACHE_HEADERS)
    assert response.output_text
    _check_response(gw, key_id, response.usage, streamed=False)
    assert_cached_and_reasoning(only_row(gw, key_id))


async def test_responses_async_non_streaming(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with async_client(gw, secret) as client:
        response = await client.responses.create(model=MODEL, input=INPUT)
    assert response.output_text
    _check_response(gw, key_id, response.usage, streamed=False)


def _final_response(events: list[Any]) -> Any:
    types = [event.type for event in events]
    assert types[0] == "response.created"
    assert types[-1] == "response.completed"
    assert types.count("response.completed") == 1
    assert "response.output_text.delta" in types
    sequence = [event.sequence_number for event in events]
    assert sequence == list(range(len(events)))
    return events[-1].response


def test_responses_sync_create_stream(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with sync_client(gw, secret) as client:
        stream = client.responses.create(
            model=MODEL, input=INPUT, stream=True, extra_headers=CACHE_HEADERS
        )
        with stream:
            events = list(stream)
    final = _final_response(events)
    _check_response(gw, key_id, final.usage, streamed=True)
    assert_cached_and_reasoning(only_row(gw, key_id))


async def test_responses_async_create_stream(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with async_client(gw, secret) as client:
        stream = await client.responses.create(model=MODEL, input=INPUT, stream=True)
        async with stream:
            events = [event async for event in stream]
    final = _final_response(events)
    _check_response(gw, key_id, final.usage, streamed=True)


def test_responses_sync_stream_helper(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with (
        sync_client(gw, secret) as client,
        client.responses.stream(model=MODEL, input=INPUT) as stream,
    ):
        events = list(stream)
        final = stream.get_final_response()
    assert _final_response(events).id == final.id
    assert final.output_text
    _check_response(gw, key_id, final.usage, streamed=True)


async def test_responses_async_stream_helper(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with (
        async_client(gw, secret) as client,
        client.responses.stream(model=MODEL, input=INPUT, extra_headers=CACHE_HEADERS) as stream,
    ):
        events = [event async for event in stream]
        final = await stream.get_final_response()
    assert _final_response(events).id == final.id
    _check_response(gw, key_id, final.usage, streamed=True)
    assert_cached_and_reasoning(only_row(gw, key_id))


# ----------------------------------------------------------------------------- embeddings

EMBED_MODEL = "text-embedding-3-small"
EMBED_INPUT = ["The quick brown fox jumps over the lazy dog.", "Bonjour, ça va ?"]


def _check_embeddings(gw: GatewayHarness, key_id: str, response: Any, fmt: str) -> None:
    row = only_row(gw, key_id)
    record = record_of(gw, row)
    assert record.body["encoding_format"] == fmt
    assert record.usage_reported is not None
    assert response.usage.prompt_tokens == record.usage_reported["prompt_tokens"]
    assert row.input_tokens == record.usage_reported["prompt_tokens"] > 0
    assert row.output_tokens == 0
    check_row(
        gw,
        row,
        Usage(input_tokens=record.usage_reported["prompt_tokens"]),
        surface="openai.embeddings",
        streamed=False,
        model=EMBED_MODEL,
    )
    # 0.02 $/M = 20 nanos/token
    assert row.cost_nanos == 20 * row.input_tokens


def test_embeddings_sdk_default_base64(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    with sync_client(gw, secret) as client:
        response = client.embeddings.create(model=EMBED_MODEL, input=EMBED_INPUT)
    _check_embeddings(gw, key_id, response, "base64")
    assert [item.index for item in response.data] == [0, 1]
    for item in response.data:
        assert isinstance(item.embedding, list)
        assert len(item.embedding) == 1536
        assert math.isclose(math.sqrt(sum(v * v for v in item.embedding)), 1.0, rel_tol=1e-4)
    assert response.data[0].embedding != response.data[1].embedding


async def test_embeddings_explicit_float_matches_base64(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    async with async_client(gw, secret) as client:
        as_float = await client.embeddings.create(
            model=EMBED_MODEL, input=EMBED_INPUT, encoding_format="float", dimensions=64
        )
    _check_embeddings(gw, key_id, as_float, "float")
    assert [len(item.embedding) for item in as_float.data] == [64, 64]
    # the same input in base64 (raw, undecoded by the SDK) decodes to the same vector
    secret2, key_id2 = new_key(gw)
    async with async_client(gw, secret2) as client:
        raw = await client.embeddings.with_raw_response.create(
            model=EMBED_MODEL, input=EMBED_INPUT, encoding_format="base64", dimensions=64
        )
    encoded = raw.http_response.json()["data"][0]["embedding"]
    assert isinstance(encoded, str)
    decoded = list(struct.unpack("<64f", base64.b64decode(encoded)))
    assert decoded == as_float.data[0].embedding
    _check_embeddings(gw, key_id2, raw.parse(), "base64")


# ----------------------------------------------------------------------------- models


def test_models_list_respects_allowed_models(gw: GatewayHarness) -> None:
    secret, _ = new_key(gw, allowed_models=["gpt-4o*"])
    with sync_client(gw, secret) as client:
        ids = [model.id for model in client.models.list()]
    assert sorted(ids) == ["gpt-4o", "gpt-4o-mini"]


def test_models_list_without_allow_list_shows_every_model(gw: GatewayHarness) -> None:
    secret, _ = new_key(gw)
    with sync_client(gw, secret) as client:
        models = list(client.models.list())
    expected = {
        "gpt-4o-mini",
        "gpt-4o",
        "o4-mini",
        "text-embedding-3-small",
        "claude-sonnet-4-6",
        "claude-haiku-4-5",
        "mystery-model",
        "house-model",
    }
    assert {model.id for model in models} == expected
    assert len(models) == len(expected)
    owners = {model.id: model.owned_by for model in models}
    assert owners["claude-sonnet-4-6"] == "anthropic"
    assert owners["gpt-4o"] == "openai"


def test_models_list_needs_a_valid_key(gw: GatewayHarness) -> None:
    with (
        sync_client(gw, "sk-not-a-spendgate-key") as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.list()


def test_models_retrieve_answers_one_model_the_key_may_use(gw: GatewayHarness) -> None:
    """``models.retrieve`` (``GET /v1/models/{id}``), which clients call to check a model
    before using it: the listing's entry; a model the key may not use, or none, is 404."""
    secret, _ = new_key(gw, allowed_models=["gpt-4o*"])
    with sync_client(gw, secret) as client:
        model = client.models.retrieve("gpt-4o-mini")
        assert (model.id, model.object, model.owned_by) == ("gpt-4o-mini", "model", "openai")
        for hidden in ("claude-haiku-4-5", "no-such-model"):
            with pytest.raises(openai.NotFoundError) as caught:
                client.models.retrieve(hidden)
            assert caught.value.code == "model_not_found"
            assert hidden in caught.value.message
    with (
        sync_client(gw, "sk-not-a-spendgate-key") as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.models.retrieve("gpt-4o-mini")
