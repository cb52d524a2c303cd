"""The Gemini dialect's pure parts: usage in normal form, the request fields that decide
money (output ceiling, candidates, thinking budget), errors in Google's shape, URLs and
the stream meter."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.dialects import GENERATE, STREAM_GENERATE, for_request
from spendgate.dialects.base import Action, Prepared
from spendgate.dialects.gemini import GEMINI, from_gemini, gemini_usage_problem
from spendgate.domain import tokens
from spendgate.domain.models import ProviderKind
from spendgate.domain.usage import Usage
from spendgate.errors import BudgetExceeded, InvalidRequest, RateLimited, RateWindow
from spendgate.upstream.framing import JSON_ARRAY, JsonArraySplitter
from spendgate.upstream.providers import Provider, default_auth
from spendgate.upstream.sse import EventSplitter, EventTooLarge

BODY: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "hello there"}]}]}


def test_usage_cached_inside_prompt_thoughts_outside_candidates() -> None:
    usage = from_gemini(
        {
            "promptTokenCount": 100,
            "cachedContentTokenCount": 60,
            "candidatesTokenCount": 20,
            "thoughtsTokenCount": 30,
            "toolUsePromptTokenCount": 5,
            "totalTokenCount": 155,
        }
    )
    assert usage == Usage(
        input_tokens=105, output_tokens=50, cached_input_tokens=60, reasoning_tokens=30
    )
    assert usage.uncached_input_tokens == 45


def test_usage_problems() -> None:
    assert gemini_usage_problem({"promptTokenCount": 3}) is None  # zero counts left out
    assert gemini_usage_problem({"candidatesTokenCount": 3}) == "usage without promptTokenCount"
    assert "not a count" in str(
        gemini_usage_problem({"promptTokenCount": 3, "thoughtsTokenCount": -1})
    )
    assert gemini_usage_problem({"promptTokenCount": 3, "cachedContentTokenCount": 4})


def test_usage_of_a_response_reads_usage_metadata() -> None:
    usage, problem = GENERATE.usage_of({"usageMetadata": {"promptTokenCount": 7}})
    assert (usage, problem) == (Usage(input_tokens=7), None)
    assert GENERATE.usage_of({"usage": {"prompt_tokens": 7}}) == (
        None,
        "no usageMetadata in the response",
    )


def test_requested_output_and_choices() -> None:
    body = {**BODY, "generationConfig": {"maxOutputTokens": 300, "candidateCount": 3}}
    assert GENERATE.requested_output(body) == (300, 3)
    assert GENERATE.requested_output(BODY) == (None, 1)


@pytest.mark.parametrize(
    "config",
    [
        {"maxOutputTokens": 0},
        {"maxOutputTokens": "100"},
        {"maxOutputTokens": True},
        {"candidateCount": 9},
        {"thinkingConfig": {"thinkingBudget": "lots"}},
        {"thinkingConfig": {"thinking_budget": -2}},
    ],
)
def test_money_fields_that_providers_could_read_differently_are_refused(
    config: dict[str, Any],
) -> None:
    with pytest.raises(InvalidRequest):
        GENERATE.check({**BODY, "generationConfig": config})


def test_check_refuses_a_config_that_is_not_an_object() -> None:
    with pytest.raises(InvalidRequest):
        GENERATE.check({**BODY, "generationConfig": [1]})


@pytest.mark.parametrize("name", ["thinkingBudget", "thinking_budget"])
def test_clamping_writes_max_output_tokens_and_lowers_the_thinking_budget(name: str) -> None:
    body = {**BODY, "generationConfig": {"temperature": 0.2, "thinkingConfig": {name: 8000}}}
    prepared = GENERATE.prepare(body, "gemini-2.5-flash", ceiling=500)
    assert body["generationConfig"] == {
        "temperature": 0.2,
        "maxOutputTokens": 500,
        "thinkingConfig": {name: 500},
    }
    assert "model" not in body  # the model is in the path, never added to the body
    assert prepared.stream is False
    small = {**BODY, "generationConfig": {"thinkingConfig": {name: 100}}}
    GENERATE.prepare(small, "gemini-2.5-flash", ceiling=500)
    assert small["generationConfig"]["thinkingConfig"] == {name: 100}


def test_the_body_goes_upstream_as_parsed() -> None:
    raw = b'{"contents": [ ], "contents": [{"parts": [{"text": "hi"}]}]}'  # a key twice
    prepared = STREAM_GENERATE.prepare(orjson.loads(raw), "gemini-2.5-flash")
    assert prepared.body == b'{"contents":[{"parts":[{"text":"hi"}]}]}'  # what was read
    assert prepared.stream is True  # streamGenerateContent streams whatever the body says


def test_stream_without_alt_sse_is_framed_as_a_json_array() -> None:
    assert STREAM_GENERATE.framing_for({"alt": "sse", "key": "k"}) is None
    assert STREAM_GENERATE.framing_for({}) is JSON_ARRAY
    assert GENERATE.framing_for({}) is None


@pytest.mark.parametrize("step", [1, 2, 7, 1000])
def test_json_array_splitter_cuts_elements_however_the_bytes_arrive(step: int) -> None:
    stream = b'[{"a": "} ] { \\" [", "b": [1, {"c": 2}]}\r\n,\r\n{"d": {}}\r\n]\n'
    splitter = JsonArraySplitter(1000)
    events = []
    for start in range(0, len(stream), step):
        events += splitter.feed(stream[start : start + step])
    assert [orjson.loads(e.data) for e in events[:2]] == [
        {"a": '} ] { " [', "b": [1, {"c": 2}]},
        {"d": {}},
    ]
    assert events[2].data == b""
    assert b"".join(e.raw for e in events) + splitter.pending() == stream


_TEXT = st.text(alphabet='a"\\{}[], é\n', max_size=12)


@given(st.lists(_TEXT, max_size=4), st.lists(st.integers(1, 6), min_size=1))
def test_json_array_splitter_reads_any_strings_in_any_pieces(
    texts: list[str], steps: list[int]
) -> None:
    """Quotes, backslashes and brackets inside strings, an escape cut from what it escapes:
    the elements come out whole, and the raw bytes add up to the stream."""
    elements = [{"t": text, "l": [text, {"x": text}]} for text in texts]
    stream = b"[" + b",\r\n".join(orjson.dumps(element) for element in elements) + b"]"
    splitter = JsonArraySplitter(10_000)
    events, start, turn = [], 0, 0
    while start < len(stream):
        step = steps[turn % len(steps)]
        events += splitter.feed(stream[start : start + step])
        start, turn = start + step, turn + 1
    assert [orjson.loads(event.data) for event in events if event.data] == elements
    assert b"".join(event.raw for event in events) == stream


def test_json_array_splitter_bounds_an_element() -> None:
    splitter = JsonArraySplitter(16)
    with pytest.raises(EventTooLarge):
        splitter.feed(b'[{"text": "' + b"x" * 32)


def test_array_meter_continues_and_closes_the_array() -> None:
    meter = STREAM_GENERATE.meter(Prepared(b"", True, True, framing=JSON_ARRAY), BODY)
    events = JsonArraySplitter(1000).feed(b'[{"candidates":[{"index":0}]}')
    assert meter.feed(events[0]) is Action.FORWARD
    closed = b'[{"candidates":[{"index":0}]}' + meter.error_event("upstream_error", "broke")
    assert orjson.loads(closed)[-1]["error"]["message"] == "broke"
    cut = b'[{"candidates":[{"index":0}]}' + meter.cut_events(Usage(input_tokens=1))
    assert orjson.loads(cut)[-1]["candidates"][0]["finishReason"] == "MAX_TOKENS"
    fresh = STREAM_GENERATE.meter(Prepared(b"", True, True, framing=JSON_ARRAY), BODY)
    assert orjson.loads(fresh.error_event("upstream_error", "no bytes"))[0]["error"]


@pytest.mark.parametrize("stream", [b'[{"candidates":[{"index":0}]}\r\n]', b"[]", b"\r\n[\r\n]"])
def test_array_closed_unfinished_gets_the_error_inside(stream: bytes) -> None:
    """The ``]`` of an array no candidate finished is held (its own after an element,
    dropped with its ``[`` when none came): the error goes in, the held ``]`` closes it."""
    meter = STREAM_GENERATE.meter(Prepared(b"", True, True, framing=JSON_ARRAY), BODY)
    sent, held = b"", b""
    for event in JsonArraySplitter(1000).feed(stream):
        action = meter.feed(event)
        sent += event.raw if action is Action.FORWARD else b""
        held += event.raw if action is Action.HOLD else b""
    assert not meter.finished
    body = orjson.loads(sent + meter.error_event("upstream_error", "unfinished") + held)
    assert body[-1]["error"]["message"] == "unfinished"
    assert len(body) == stream.count(b"candidates") + 1


def test_routes_and_upstream_paths() -> None:
    assert STREAM_GENERATE.routes == (
        "/v1beta/models/{model}:streamGenerateContent",
        "/v1/models/{model}:streamGenerateContent",
    )
    assert GENERATE.upstream_path("/v1/models/x:generateContent") == (
        "/v1/models/{model}:generateContent"
    )
    assert GENERATE.upstream_path("/v1beta/models/x:generateContent") == (
        "/v1beta/models/{model}:generateContent"
    )


def test_dialect_claims_its_paths_only() -> None:
    assert for_request("/v1beta/models/x:generateContent", {}) is GEMINI
    assert for_request("/v1beta/models", {}) is GEMINI
    assert for_request("/v1/models/x:countTokens", {}) is GEMINI
    assert for_request("/v1/models", {}) is not GEMINI
    assert for_request("/v1/models", {"x-goog-api-key": "k"}) is GEMINI
    assert for_request("/v1/models/gemini-2.5-flash", {"x-goog-api-client": "genai"}) is GEMINI
    assert for_request("/v1/models/gpt-4o", {}) is not GEMINI
    # an OpenAI fine-tuned model has colons too (models.retrieve of one)
    assert for_request("/v1/models/ft:gpt-4o-mini:acme:notes:9xZ1abCd", {}) is not GEMINI
    assert for_request("/v1/models/ft:gpt-4o-mini:acme::abCdeFgh", {}) is not GEMINI
    assert for_request("/v1/models/x:streamGenerateContent", {}) is GEMINI
    assert for_request("/v1/chat/completions", {}) is not GEMINI


def test_provider_url_names_the_model_and_drops_the_gateway_key() -> None:
    provider = Provider("google", ProviderKind.GEMINI, "https://generativelanguage.googleapis.com")
    url = provider.url_for(
        "/v1beta/models/{model}:streamGenerateContent", "alt=sse&key=sg-secret", "gemini/x 1"
    )
    assert url == (
        "https://generativelanguage.googleapis.com/v1beta/models/"
        "gemini%2Fx%201:streamGenerateContent?alt=sse"
    )
    assert default_auth(ProviderKind.GEMINI).value == "x-goog-api-key"
    headers = provider.request_headers({"x-goog-api-key": "sg-secret", "x-goog-api-client": "a"})
    assert "x-goog-api-key" not in headers
    assert headers["x-goog-api-client"] == "a"


def test_errors_in_google_shape() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    window = RateWindow(kind="requests", limit=5, remaining=0, resets_at=now, now=now)
    limited = RateLimited("slow down", window=window, wait_s=2.4)
    body = GEMINI.error_body(limited, "req-1")
    assert body == {
        "error": {
            "code": 429,
            "message": "slow down",
            "status": "RESOURCE_EXHAUSTED",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "3s"}],
        }
    }
    spent = BudgetExceeded("budget spent")
    assert GEMINI.error_status(spent) == 429
    assert GEMINI.error_body(spent, None)["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert "details" not in GEMINI.error_body(spent, None)["error"]
    assert GEMINI.error_headers(spent, "req-1")["x-should-retry"] == "false"
    assert GEMINI.error_body(InvalidRequest("no"), None)["error"]["status"] == "INVALID_ARGUMENT"


def _events(*chunks: bytes) -> list[Any]:
    splitter = EventSplitter()
    return [event for chunk in chunks for event in splitter.feed(chunk)]


def test_meter_holds_the_finishing_chunk_and_reads_its_totals() -> None:
    meter = STREAM_GENERATE.meter(Prepared(b"", True, True), BODY)
    first, last = _events(
        b'data: {"candidates":[{"content":{"parts":[{"text":"Hi "}]},"index":0}],'
        b'"usageMetadata":{"promptTokenCount":9},"modelVersion":"gemini-2.5-flash"}\r\n\r\n',
        b'data: {"candidates":[{"content":{"parts":[{"text":"there"}]},"finishReason":"STOP",'
        b'"index":0}],"usageMetadata":{"promptTokenCount":9,"candidatesTokenCount":2,'
        b'"thoughtsTokenCount":4,"totalTokenCount":15}}\r\n\r\n',
    )
    assert meter.feed(first) is Action.FORWARD
    assert not meter.finished
    assert meter.feed(last) is Action.HOLD
    assert meter.finished
    assert meter.served_model == "gemini-2.5-flash"
    assert meter.usage() == Usage(input_tokens=9, output_tokens=6, reasoning_tokens=4)
    assert meter.generated.kept_text() == "Hi there"
    (cut,) = _events(meter.cut_events(Usage(input_tokens=9, output_tokens=6)))
    assert b'"finishReason":"MAX_TOKENS"' in cut.data


def test_meter_releases_a_held_chunk_that_was_not_the_end() -> None:
    """A chunk after the one held as the end (every chunk said ``finishReason``) releases
    it and is held in its place; what is not a chunk of the answer (an error, the array's
    ``]``) is held with it, never releasing the end."""
    meter = STREAM_GENERATE.meter(Prepared(b"", True, True, framing=JSON_ARRAY), BODY)
    chunk = b'{"candidates":[{"content":{"parts":[{"text":"Hi"}]},"finishReason":"STOP"}]}'
    stream = b"[" + chunk + b",\r\n" + chunk + b",\r\n" + chunk + b"\r\n]"
    actions = [meter.feed(event) for event in JsonArraySplitter(1000).feed(stream)]
    assert actions == [Action.HOLD, Action.RELEASE, Action.RELEASE, Action.HOLD]
    assert meter.generated.kept_text() == "HiHiHi"
    (error,) = _events(b'data: {"error":{"code":503,"message":"busy"}}\n\n')
    assert meter.feed(error) is Action.HOLD


def test_meter_notes_an_upstream_error_chunk() -> None:
    meter = STREAM_GENERATE.meter(Prepared(b"", True, True), BODY)
    (event,) = _events(b'data: {"error":{"code":503,"status":"UNAVAILABLE","message":"busy"}}\n\n')
    assert meter.feed(event) is Action.FORWARD
    assert meter.upstream_error == "UNAVAILABLE: 503: busy"
    assert not meter.finished


def test_inline_audio_counts_at_least_what_gemini_bills_for_it() -> None:
    """Gemini bills 32 tokens a second of audio, whatever its bit rate: a minute of 8
    kbit/s MP3 (60,000 bytes) is 1,920 tokens, and so is a minute of 4 kbit/s audio. At
    50 bytes a token (OpenAI's 10 tokens a second) the minute counted 1,200."""
    for bytes_per_second in (500, 1_000, 16_000):
        audio = base64.b64encode(b"\0" * 60 * bytes_per_second).decode()
        part = {"inlineData": {"mimeType": "audio/mp3", "data": audio}}
        body = {"contents": [{"role": "user", "parts": [part]}]}
        assert tokens.count_gemini_input("gemini-2.5-flash", body).tokens >= 60 * 32


def test_input_count_is_an_upper_bound_over_every_part() -> None:
    text_only = tokens.count_gemini_input("gemini-2.5-flash", BODY)
    assert text_only.exact is False
    with_image = {
        "systemInstruction": {"parts": [{"text": "be brief"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "hello there"}]},
            {"role": "user", "parts": [{"inlineData": {"mimeType": "image/png", "data": "AAAA"}}]},
        ],
        "tools": [{"functionDeclarations": [{"name": "lookup"}]}],
    }
    counted = tokens.count_gemini_input("gemini-2.5-flash", with_image).tokens
    assert counted >= text_only.tokens + tokens.OTHER_IMAGE_TOKENS


def test_audio_tokens_are_read_from_the_prompts_modality_details() -> None:
    from spendgate.dialects.gemini import from_gemini

    usage = from_gemini(
        {
            "promptTokenCount": 500,
            "promptTokensDetails": [
                {"modality": "TEXT", "tokenCount": 180},
                {"modality": "AUDIO", "tokenCount": 320},
            ],
            "candidatesTokenCount": 7,
        }
    )
    assert (usage.input_tokens, usage.audio_input_tokens) == (500, 320)


@pytest.mark.parametrize(
    ("part", "audio"),
    [
        ({"text": "hi"}, False),
        ({"inlineData": {"mimeType": "image/png", "data": "AAAA"}}, False),
        ({"inline_data": {"mime_type": "application/pdf", "data": "AAAA"}}, False),
        ({"inlineData": {"mimeType": "audio/wav", "data": "AAAA"}}, True),
        ({"inlineData": {"mimeType": "video/mp4", "data": "AAAA"}}, True),
        ({"fileData": {"fileUri": "https://generativelanguage.googleapis.com/f/1"}}, True),
        ({"file_data": {"mime_type": "image/jpeg", "file_uri": "gs://b/o"}}, False),
    ],
)
def test_a_body_may_hold_audio_where_a_part_is_not_known_silent(
    part: dict[str, Any], audio: bool
) -> None:
    from spendgate.dialects.gemini_hidden import gemini_may_hold_audio

    body = {"contents": [{"role": "user", "parts": [{"text": "x"}, part]}]}
    assert gemini_may_hold_audio(body) is audio
