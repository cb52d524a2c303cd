"""The simulator's Gemini API, driven by the real ``google-genai`` SDK and by raw HTTP for
its wire details: ``usageMetadata`` (cached tokens inside the prompt count, thoughts
outside the candidates count, zero counts left out), SSE chunks framed
``data: ...\\r\\n\\r\\n``, the JSON-array stream without ``alt=sse``, errors in Google's
shape."""

from __future__ import annotations

from collections.abc import Iterator

import httpx2
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from simhttp import Answer, Raw

from spendgate.simulator.thread import SimulatorThread

MODEL = "gemini-2.5-flash"
BODY = {"contents": [{"role": "user", "parts": [{"text": "Tell me about spend limits."}]}]}
KEY = {"x-goog-api-key": "AIza-upstream"}


@pytest.fixture
def gem(sim: SimulatorThread) -> Iterator[genai.Client]:
    http = httpx2.Client()
    options = types.HttpOptions(base_url=sim.url, httpx_client=http)
    client = genai.Client(api_key="AIza-upstream", http_options=options)
    yield client
    client.close()
    http.close()


def stream_sse(raw: Raw, **headers: str) -> Answer:
    """``streamGenerateContent?alt=sse`` of `BODY`, with ``headers`` (``x_sim_...``)."""
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    return raw.post(path, BODY, **KEY, **headers)


def test_generate_content_usage(sim: SimulatorThread) -> None:
    http = httpx2.Client()
    headers = {
        "x-sim-output-tokens": "30",
        "x-sim-reasoning-tokens": "10",
        "x-sim-cached-tokens": "4",
    }
    options = types.HttpOptions(base_url=sim.url, headers=headers, httpx_client=http)
    client = genai.Client(api_key="AIza-upstream", http_options=options)
    try:
        answer = client.models.generate_content(model=MODEL, contents="Tell me about spend limits.")
    finally:
        client.close()
        http.close()
    meta = answer.usage_metadata
    assert meta is not None
    assert answer.text is not None
    assert len(answer.text.split()) == 20
    assert meta.candidates_token_count == 20
    assert meta.thoughts_token_count == 10
    assert meta.cached_content_token_count == 4
    record = sim.records[-1]
    assert meta.prompt_token_count == record.input_tokens
    assert meta.total_token_count == record.input_tokens + 30
    assert record.output_tokens == 30
    assert record.cached_input_tokens == 4


def test_max_output_tokens_caps_thoughts_and_text_together(raw: Raw) -> None:
    body = {**BODY, "generationConfig": {"maxOutputTokens": 12}}
    answer = raw.post(
        f"/v1beta/models/{MODEL}:generateContent",
        body,
        x_sim_output_tokens="50",
        x_sim_reasoning_tokens="5",
        **{"x-goog-api-key": "AIza"},
    )
    assert answer.status == 200
    chunk = answer.json()
    assert chunk["candidates"][0]["finishReason"] == "MAX_TOKENS"
    usage = chunk["usageMetadata"]
    assert usage["candidatesTokenCount"] + usage["thoughtsTokenCount"] == 12
    assert "cachedContentTokenCount" not in usage  # zero counts are left out


def test_stream_sse_chunks(sim: SimulatorThread, raw: Raw) -> None:
    answer = stream_sse(raw, x_sim_output_tokens="12")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/event-stream")
    blocks = answer.data.split(b"\r\n\r\n")
    assert blocks[-1] == b""
    chunks = [orjson.loads(block.removeprefix(b"data: ")) for block in blocks[:-1]]
    assert len(chunks) > 1
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 12
    assert all(c["modelVersion"] == MODEL for c in chunks)
    assert sim.records[-1].stream is True


def test_stream_without_alt_sse_is_one_json_array(raw: Raw) -> None:
    answer = raw.post(
        f"/v1beta/models/{MODEL}:streamGenerateContent", BODY, x_sim_output_tokens="12", **KEY
    )
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("application/json")
    chunks = answer.json()
    assert isinstance(chunks, list)
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 12


def test_stream_without_a_finish_reason(raw: Raw) -> None:
    """``x-sim-no-finish``: every chunk as usual, the usage included, but no candidate
    ever gets a ``finishReason``; the JSON array still closes."""
    answer = raw.post(
        f"/v1beta/models/{MODEL}:streamGenerateContent",
        BODY,
        x_sim_output_tokens="12",
        x_sim_no_finish="1",
        **KEY,
    )
    chunks = answer.json()
    assert answer.data.endswith(b"]")
    assert len(chunks) > 1
    assert all("finishReason" not in c["candidates"][0] for c in chunks)
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 12


def test_stream_finishing_every_chunk(raw: Raw) -> None:
    answer = stream_sse(raw, x_sim_output_tokens="12", x_sim_finish_every_chunk="1")
    blocks = answer.data.split(b"\r\n\r\n")[:-1]
    chunks = [orjson.loads(block.removeprefix(b"data: ")) for block in blocks]
    assert len(chunks) > 1
    assert all(c["candidates"][0]["finishReason"] == "STOP" for c in chunks)
    counts = [c["usageMetadata"]["candidatesTokenCount"] for c in chunks]
    assert counts == sorted(counts)
    assert counts[-1] == 12


def test_stream_without_its_last_blank_line_is_read_whole_by_the_sdk(
    sim: SimulatorThread, raw: Raw
) -> None:
    """``x-sim-framing: unterminated``: the stream closes after the last event's line break;
    google-genai flushes what it holds at the end, so it still reads that chunk."""
    headers = {"x-sim-framing": "unterminated", "x-sim-output-tokens": "12"}
    answer = stream_sse(raw, x_sim_framing="unterminated", x_sim_output_tokens="12")
    assert answer.data.endswith(b"}\n")
    assert not answer.data.endswith(b"\n\n")
    http = httpx2.Client()
    options = types.HttpOptions(base_url=sim.url, headers=headers, httpx_client=http)
    client = genai.Client(api_key="AIza-upstream", http_options=options)
    try:
        chunks = list(client.models.generate_content_stream(model=MODEL, contents="Tell me."))
    finally:
        client.close()
        http.close()
    final = chunks[-1]
    assert final.candidates
    assert final.candidates[0].finish_reason == types.FinishReason.STOP
    assert final.usage_metadata is not None
    assert final.usage_metadata.candidates_token_count == 12


def test_stream_through_the_sdk(gem: genai.Client) -> None:
    chunks = list(gem.models.generate_content_stream(model=MODEL, contents="Tell me."))
    assert chunks[-1].usage_metadata is not None
    text = "".join(chunk.text or "" for chunk in chunks)
    assert len(text.split()) == chunks[-1].usage_metadata.candidates_token_count


def test_count_tokens(gem: genai.Client, sim: SimulatorThread) -> None:
    counted = gem.models.count_tokens(model=MODEL, contents="Tell me about spend limits.")
    assert counted.total_tokens == sim.records[-1].input_tokens
    assert counted.total_tokens is not None
    assert counted.total_tokens > 0


def test_errors_in_google_shape(raw: Raw) -> None:
    path = f"/v1beta/models/{MODEL}:generateContent"
    no_key = raw.post(path, BODY)  # (only an Authorization header: not Gemini's)
    assert no_key.status == 403
    assert no_key.json()["error"]["status"] == "PERMISSION_DENIED"
    limited = raw.post(path, BODY, x_sim_status="429", **KEY)
    error = limited.json()["error"]
    assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
    assert error["details"][0]["@type"] == "type.googleapis.com/google.rpc.RetryInfo"
    empty = raw.post(path, {"contents": []}, **KEY)
    assert empty.status == 400
    assert empty.json()["error"]["status"] == "INVALID_ARGUMENT"
    by_query = raw.post(path + "?key=AIza", BODY)
    assert by_query.status == 200


def test_mid_stream_error_is_a_data_chunk(raw: Raw) -> None:
    answer = stream_sse(raw, x_sim_output_tokens="40", x_sim_error_after_chunks="2")
    last = answer.data.split(b"\r\n\r\n")[-2]
    assert orjson.loads(last.removeprefix(b"data: "))["error"]["status"] == "UNAVAILABLE"


def test_sdk_raises_client_error_on_429(sim: SimulatorThread) -> None:
    http = httpx2.Client()
    options = types.HttpOptions(
        base_url=sim.url, headers={"x-sim-status": "429"}, httpx_client=http
    )
    client = genai.Client(api_key="AIza-upstream", http_options=options)
    try:
        with pytest.raises(genai_errors.ClientError) as caught:
            client.models.generate_content(model=MODEL, contents="hi")
    finally:
        client.close()
        http.close()
    assert caught.value.code == 429
    assert len(sim.records) == 1  # google-genai does not retry by default (CLIENTS.md §7)


@pytest.mark.parametrize(
    ("asked", "forced", "reported"),
    [
        ("priority", None, "priority"),
        ("FLEX", None, "flex"),
        ("SERVICE_TIER_PRIORITY", None, "priority"),
        ("priority", "standard", "standard"),  # downgraded past the Priority limit
        (None, None, None),
    ],
)
def test_the_tier_served_is_the_x_gemini_service_tier_header(
    raw: Raw, asked: str | None, forced: str | None, reported: str | None
) -> None:
    body = {**BODY, "serviceTier": asked} if asked else BODY
    headers = {"x-sim-service-tier": forced} if forced else {}
    for path in (
        f"/v1beta/models/{MODEL}:generateContent",
        f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
    ):
        answer = raw.send("POST", path, body, {**KEY, **headers})
        assert answer.status == 200
        assert answer.headers.get("x-gemini-service-tier") == reported
