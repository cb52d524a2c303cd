"""End to end: the real ``google-genai`` SDK against the gateway's native Gemini routes
(``/v1beta/models/{model}:generateContent``, ``:streamGenerateContent?alt=sse``,
``:countTokens``), which talk to the simulator as a ``kind: gemini`` provider.

Gemini's ``promptTokenCount`` includes ``cachedContentTokenCount`` and its
``thoughtsTokenCount`` is output outside ``candidatesTokenCount`` (CLIENTS.md §7); the
ledger's ``input_tokens`` include the cached ones and its ``output_tokens`` the thoughts.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from harness import SIM_SECRET_GEMINI, GatewayHarness, with_gemini
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.simulator import RequestRecord

MODEL = "gemini-2.5-flash"  # $0.30 input, $0.03 cached input, $2.50 output per 1M tokens
ALIASED = "house-gemini"  # served as gemini-2.5-flash upstream
PROMPT = "Describe a lighthouse at dusk in two sentences."
BUDGET_USD = "0.0006"
SDK_API = "/v1"  # google-genai 3.6 calls /v1/ (Gemini CLI and older SDKs /v1beta/): both kept


def configure(data: dict[str, Any]) -> None:
    with_gemini(data, MODEL)
    data["models"][ALIASED] = {"provider": "google", "upstream_model": MODEL}
    data["budgets"] = [
        {
            "name": "gem-user",
            "scope": "user",
            "match": "u-gem-budget",
            "limit_usd": BUDGET_USD,
            "period": "daily",
        },
        {
            "name": "gem-think",
            "scope": "user",
            "match": "u-gem-think",
            "limit_usd": BUDGET_USD,
            "period": "daily",
        },
        {"name": "gem-guard", "scope": "user", "match": "u-gem-guard", "limit_usd": "1"},
        {"name": "gem-files", "scope": "user", "match": "u-gem-files", "limit_usd": "5"},
    ]
    data["budget_settings"] = {"timezone": "UTC", "min_output_tokens": 16}
    data["runaway"] = {"loop_max_repeats": 2, "loop_window_s": 60}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("gemini") / "spendgate.db",
        configure=configure,
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


_MADE: list[genai.Client] = []


def client(
    gw: GatewayHarness,
    secret: str,
    headers: dict[str, str] | None = None,
    sent: list[httpx2.Request] | None = None,
) -> genai.Client:
    """The real SDK, pointed at the gateway as ``GOOGLE_GEMINI_BASE_URL`` would; ``sent``
    collects every HTTP request it makes (its retries included)."""
    hooks: dict[str, list[Any]] = {"request": [sent.append]} if sent is not None else {}
    options = types.HttpOptions(
        base_url=gw.url,
        headers=headers or {},
        timeout=10_000,
        httpx_client=httpx2.Client(event_hooks=hooks),
    )
    made = genai.Client(api_key=secret, http_options=options)
    _MADE.append(made)
    return made


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _MADE:
        made = _MADE.pop()
        made.close()
        made._api_client._httpx_client.close()


def records(gw: GatewayHarness) -> list[RequestRecord]:
    return list(gw.sim.records)


def last_record(gw: GatewayHarness) -> RequestRecord:
    return gw.sim.records[-1]


def only_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def price(gw: GatewayHarness) -> Any:
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    assert route.price is not None
    return route.price


def worst_nanos(gw: GatewayHarness, body: dict[str, Any], ceiling: int) -> int:
    """What the gateway reserves for ``body`` at ``ceiling``: every input token (its upper
    bound: Gemini's tokenizer is not public) at the input rate, the output at its rate."""
    count = tokens.count_gemini_input(MODEL, body)
    worst = worst_case(
        price(gw),
        input_tokens=input_upper_bound(count.tokens, price(gw).max_input_tokens),
        input_exact=count.exact,
        ceiling=ceiling,
        choices=1,
        cache_write=False,
        cache_write_1h=False,
    )
    return worst.amount(Unit.NANOS, ceiling)


# ----------------------------------------------------------------------------- generate


def test_generate_content_billed_with_thoughts_as_output_and_cache_reads(
    gw: GatewayHarness,
) -> None:
    secret = gw.create_key(user="u-gem-1")
    key_id = gw.last_key_id
    sim_headers = {
        "x-sim-output-tokens": "40",
        "x-sim-reasoning-tokens": "15",
        "x-sim-cached-tokens": "8",
    }
    sdk = client(gw, secret, sim_headers)
    answer = sdk.models.generate_content(
        model=MODEL,
        contents=PROMPT,
        config=types.GenerateContentConfig(max_output_tokens=200),
    )
    assert answer.text
    meta = answer.usage_metadata
    assert meta is not None
    assert meta.candidates_token_count == 25
    assert meta.thoughts_token_count == 15
    assert meta.cached_content_token_count == 8
    record = last_record(gw)
    # the gateway key stayed here; the provider's went upstream, the model in the path
    assert record.path == f"{SDK_API}/models/{MODEL}:generateContent"
    assert record.headers["x-goog-api-key"] == SIM_SECRET_GEMINI
    assert secret not in orjson.dumps(record.headers).decode()
    assert "model" not in record.body
    assert record.body["generationConfig"]["maxOutputTokens"] == 200
    row = only_row(gw, key_id)
    prompt = meta.prompt_token_count
    assert prompt is not None
    assert prompt == record.input_tokens
    assert row.surface == "gemini.generate_content"
    assert row.input_tokens == prompt  # cached tokens included, as Gemini counts them
    assert row.cached_input_tokens == 8
    assert row.output_tokens == 40  # 25 candidates + 15 thoughts
    assert row.reasoning_tokens == 15
    assert row.streamed is False
    usage = Usage(input_tokens=prompt, output_tokens=40, cached_input_tokens=8, reasoning_tokens=15)
    assert row.cost_nanos == cost_of(usage, price(gw))
    # by hand: (prompt - 8) at $0.30/M, 8 at $0.03/M, 40 at $2.50/M
    assert row.cost_nanos == (prompt - 8) * 300 + 8 * 30 + 40 * 2_500


def test_model_alias_in_the_path_goes_upstream_as_the_provider_model(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-alias")
    sdk = client(gw, secret)
    sdk.models.generate_content(model=ALIASED, contents=PROMPT)
    record = last_record(gw)
    assert record.path == f"{SDK_API}/models/{MODEL}:generateContent"
    row = only_row(gw, gw.last_key_id)
    assert row.requested_model == ALIASED
    assert row.served_model == MODEL


# ----------------------------------------------------------------------------- stream


def test_stream_generate_content_sse_metered_from_the_last_chunk(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-stream")
    key_id = gw.last_key_id
    sim_headers = {"x-sim-output-tokens": "60", "x-sim-reasoning-tokens": "12"}
    sdk = client(gw, secret, sim_headers)
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert len(chunks) > 2
    assert "".join(chunk.text or "" for chunk in chunks)
    final = chunks[-1]
    assert final.candidates
    assert final.candidates[0].finish_reason == types.FinishReason.STOP
    meta = final.usage_metadata
    assert meta is not None
    assert meta.thoughts_token_count == 12
    record = last_record(gw)
    assert record.path == f"{SDK_API}/models/{MODEL}:streamGenerateContent"
    assert record.query == "alt=sse"
    assert record.stream is True
    row = only_row(gw, key_id)
    assert row.surface == "gemini.stream_generate_content"
    assert row.streamed is True
    assert row.error is None
    assert row.input_tokens == meta.prompt_token_count
    assert row.output_tokens == 60
    assert row.reasoning_tokens == 12
    assert row.cost_nanos == row.input_tokens * 300 + 60 * 2_500


def test_stream_metered_from_its_last_usage_when_it_finishes_early(gw: GatewayHarness) -> None:
    """A stream whose chunks say ``finishReason`` before its last one (every chunk, as
    Gemini streamed in 2024; a candidate done before another's first chunk): the chunks
    after the finish are held, and their cumulative usage is the one charged (it was the
    usage of the chunk that first finished, a fraction of the answer)."""
    secret = gw.create_key(user="u-gem-early")
    sim_headers = {"x-sim-output-tokens": "60", "x-sim-finish-every-chunk": "1"}
    sdk = client(gw, secret, sim_headers)
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert len(chunks) > 2
    meta = chunks[-1].usage_metadata
    assert meta is not None
    assert meta.candidates_token_count == 60
    row = only_row(gw, gw.last_key_id)
    assert (row.error, row.usage_estimated) == (None, False)
    assert (row.input_tokens, row.output_tokens) == (meta.prompt_token_count, 60)
    assert row.cost_nanos == row.input_tokens * 300 + 60 * 2_500


def test_stream_that_says_finish_on_every_chunk_is_relayed_as_it_comes(
    gw: GatewayHarness,
) -> None:
    """Once every candidate said ``finishReason``, a chunk is held as the end until the
    spend is durable; a chunk after it shows it was not the end and releases it. Every
    chunk of such a stream was held until the upstream had finished: the client got its
    first chunk only with the last (a streamed answer turned into a buffered one)."""
    secret = gw.create_key(user="u-gem-early-relay")
    sim_headers = {
        "x-sim-output-tokens": "60",
        "x-sim-finish-every-chunk": "1",
        "x-sim-chunk-delay-ms": "100",
    }
    sdk = client(gw, secret, sim_headers)
    stream = sdk.models.generate_content_stream(model=MODEL, contents=PROMPT)
    first = next(stream)
    record = last_record(gw)
    assert first.candidates is not None
    assert not record.finished  # the upstream is still writing the answer
    chunks = [first, *stream]
    assert len(chunks) == record.chunks_sent
    meta = chunks[-1].usage_metadata
    assert meta is not None
    assert meta.candidates_token_count == 60
    row = only_row(gw, gw.last_key_id)
    assert (row.error, row.usage_estimated, row.output_tokens) == (None, False, 60)


def test_stream_that_says_finish_on_every_chunk_is_cut_at_its_ceiling(
    gw: GatewayHarness,
) -> None:
    """The output guard watches every chunk relayed: an upstream that ignores
    ``maxOutputTokens`` while saying ``finishReason`` on every chunk is cut at the reserved
    ceiling. Held as the end one after the other, its chunks went out unguarded, 400
    tokens charged against a reservation of 50."""
    secret = gw.create_key(user="u-gem-guard")
    sim_headers = {
        "x-sim-output-tokens": "400",
        "x-sim-ignore-max": "1",
        "x-sim-finish-every-chunk": "1",
    }
    sdk = client(gw, secret, sim_headers)
    config = types.GenerateContentConfig(max_output_tokens=50)
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents=PROMPT, config=config))
    candidates = chunks[-1].candidates
    assert candidates is not None
    assert candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    row = only_row(gw, gw.last_key_id)
    assert row.output_ceiling == 50
    assert row.output_tokens <= 50
    assert row.error == "stream ended by spendgate at the reserved output ceiling (50 tokens)"


def test_a_file_by_uri_is_input_the_body_does_not_show(gw: GatewayHarness) -> None:
    """A ``fileData`` part (a Files API upload, the SDK's way with audio and video) can
    bill far more than the 32,768 tokens an attachment of unknown size was counted as: an
    hour of audio is 115,200 tokens. It is bounded by the model's input window, as a file
    by id is on the other APIs, and the answer says so."""
    secret = gw.create_key(user="u-gem-files")
    sdk = client(gw, secret)
    upload = "https://generativelanguage.googleapis.com/v1beta/files/talk-1h"
    contents = [
        types.Part.from_uri(file_uri=upload, mime_type="audio/mp3"),
        "Summarise this talk.",
    ]
    config = types.GenerateContentConfig(max_output_tokens=100)
    answer = sdk.models.generate_content(model=MODEL, contents=contents, config=config)
    assert answer.sdk_http_response is not None
    headers = answer.sdk_http_response.headers or {}
    bounded = headers["x-spendgate-input-bounded"]
    window = price(gw).max_input_tokens
    assert bounded.startswith("contents[0].parts[0]: fileData: reserved as")
    assert f"(1 x the {window}-token window)" in bounded
    (part, _) = last_record(gw).body["contents"][0]["parts"]
    assert upload in orjson.dumps(part).decode()


def test_stream_without_alt_sse_is_relayed_as_a_json_array_and_metered(
    gw: GatewayHarness,
) -> None:
    secret = gw.create_key(user="u-gem-array")
    with httpx2.stream(
        "POST",
        f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent",
        headers={"x-goog-api-key": secret, "x-sim-output-tokens": "30"},
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        data = response.read()
    chunks = orjson.loads(data)  # one JSON array, relayed byte for byte
    assert len(chunks) > 2
    assert chunks[-1]["candidates"][0]["finishReason"] == "STOP"
    assert chunks[-1]["usageMetadata"]["candidatesTokenCount"] == 30
    record = last_record(gw)
    assert record.query == ""
    row = only_row(gw, gw.last_key_id)
    assert row.streamed is True
    assert row.error is None
    assert row.usage_estimated is False
    assert row.output_tokens == 30
    assert row.input_tokens == chunks[-1]["usageMetadata"]["promptTokenCount"]


def test_json_array_stream_broken_upstream_ends_as_valid_json(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-array-cut")
    with httpx2.stream(
        "POST",
        f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent",
        headers={
            "x-goog-api-key": secret,
            "x-sim-output-tokens": "40",
            "x-sim-die-after-chunks": "2",
        },
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    ) as response:
        data = response.read()
    chunks = orjson.loads(data)  # spendgate closed the array with its error element
    assert chunks[-1]["error"]["status"] == "INTERNAL"
    assert "broke off" in chunks[-1]["error"]["message"]
    row = only_row(gw, gw.last_key_id)
    assert row.usage_estimated is True
    assert row.output_tokens > 0


# ----------------------------------------------------------------------------- count


def test_count_tokens_is_free_and_passes_through(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-count")
    sdk = client(gw, secret)
    counted = sdk.models.count_tokens(model=MODEL, contents=PROMPT)
    record = last_record(gw)
    assert record.path == f"{SDK_API}/models/{MODEL}:countTokens"
    assert counted.total_tokens == record.input_tokens
    row = only_row(gw, gw.last_key_id)
    assert row.surface == "gemini.count_tokens"
    assert row.cost_nanos == 0


# ----------------------------------------------------------------------------- auth and errors


def test_key_in_the_query_authenticates_and_never_goes_upstream(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-query")
    response = httpx2.post(
        f"{gw.url}/v1/models/{MODEL}:generateContent?key={secret}",
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )
    assert response.status_code == 200, response.text
    record = last_record(gw)
    assert record.path == f"/v1/models/{MODEL}:generateContent"
    assert record.query == ""
    assert record.headers["x-goog-api-key"] == SIM_SECRET_GEMINI
    assert only_row(gw, gw.last_key_id).surface == "gemini.generate_content"


def test_bad_key_is_refused_in_gemini_shape(gw: GatewayHarness) -> None:
    sdk = client(gw, "sg-not-a-key")
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.generate_content(model=MODEL, contents=PROMPT)
    assert caught.value.code == 401
    assert caught.value.status == "UNAUTHENTICATED"


@pytest.mark.parametrize("reason", ["API_KEY_INVALID", "API_KEY_EXPIRED"])
def test_google_refusing_the_gateways_key_is_not_the_callers_problem(
    gw: GatewayHarness, reason: str
) -> None:
    """Google answers a key it refuses with 400 INVALID_ARGUMENT "API key not valid".
    Relayed, google-genai and Gemini CLI told the user that their own key was not valid."""
    secret = gw.create_key(user=f"u-gem-{reason}")
    sent: list[httpx2.Request] = []
    headers = {"x-sim-status": "400", "x-sim-error-type": reason}
    sdk = client(gw, secret, headers=headers, sent=sent)
    with pytest.raises(genai_errors.ServerError) as caught:
        sdk.models.generate_content(model=MODEL, contents=PROMPT)
    assert caught.value.code == 502
    assert caught.value.status == "UNAVAILABLE"
    assert "refused spendgate's credential" in str(caught.value.message)
    assert "API key" not in str(caught.value.message)
    assert len(sent) == 1
    row = only_row(gw, gw.last_key_id)
    assert (row.status, row.cost_nanos) == (400, 0)
    # A 400 about the request itself is still the provider's own answer, relayed.
    sdk = client(gw, secret, headers={"x-sim-status": "400"})
    with pytest.raises(genai_errors.ClientError) as caught_client:
        sdk.models.generate_content(model=MODEL, contents=PROMPT)
    assert caught_client.value.code == 400
    assert caught_client.value.status == "INVALID_ARGUMENT"


def test_a_model_of_another_dialect_is_pointed_elsewhere(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-wrong")
    sdk = client(gw, secret)
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.generate_content(model="gpt-4o-mini", contents=PROMPT)
    assert caught.value.code == 400
    assert caught.value.status == "INVALID_ARGUMENT"
    assert "OpenAI API" in str(caught.value.message)


# ----------------------------------------------------------------------------- budgets


def test_hard_budget_clamps_max_output_tokens_then_refuses_once(gw: GatewayHarness) -> None:
    """A budget of $0.0006: the first request (no maxOutputTokens: the model's 65,536) is
    clamped to the most output the budget affords, written into generationConfig upstream;
    it spends the budget, so the next is refused with 429 RESOURCE_EXHAUSTED and
    x-should-retry: false, after ONE request, naming the budget."""
    secret = gw.create_key(user="u-gem-budget")
    key_id = gw.last_key_id
    sent: list[httpx2.Request] = []
    sdk = client(gw, secret, {"x-sim-output-tokens": "5000"}, sent)
    answer = sdk.models.generate_content(model=MODEL, contents=PROMPT)
    assert answer.candidates
    assert answer.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    record = last_record(gw)
    ceiling = record.body["generationConfig"]["maxOutputTokens"]
    # the largest ceiling whose worst case (the gateway's own pricing) fits $0.0006
    assert (
        worst_nanos(gw, record.body, ceiling) <= 600_000 < worst_nanos(gw, record.body, ceiling + 1)
    )
    row = only_row(gw, key_id)
    assert row.output_ceiling == ceiling
    assert row.clamped_from == 65_536  # the model's maximum, as none was asked
    assert row.output_tokens == ceiling
    assert row.cost_nanos == row.input_tokens * 300 + ceiling * 2_500
    upstream_before = len(records(gw))
    sent.clear()
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.generate_content(model=MODEL, contents=PROMPT)
    assert len(sent) == 1  # google-genai does not retry; x-should-retry says so to others
    assert len(records(gw)) == upstream_before
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert "gem-user" in str(caught.value.message)
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(gw.ledger(key_id, blocked=True)) == 1
    # counting tokens is free: a spent budget does not stop it
    assert sdk.models.count_tokens(model=MODEL, contents=PROMPT).total_tokens


def test_streamed_request_clamped_with_its_thinking_budget(gw: GatewayHarness) -> None:
    """Thoughts count inside maxOutputTokens: clamping a streamed request to what the
    budget affords lowers a larger thinking budget to the same ceiling, and the stream
    (cut by the provider at that ceiling) is charged exactly."""
    secret = gw.create_key(user="u-gem-think")
    key_id = gw.last_key_id
    sdk = client(gw, secret, {"x-sim-output-tokens": "5000", "x-sim-reasoning-tokens": "100"})
    config = types.GenerateContentConfig(thinking_config=types.ThinkingConfig(thinking_budget=8000))
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents=PROMPT, config=config))
    final = chunks[-1]
    assert final.candidates
    assert final.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    record = last_record(gw)
    generation = record.body["generationConfig"]
    ceiling = generation["maxOutputTokens"]
    assert worst_nanos(gw, record.body, ceiling) <= 600_000
    assert worst_nanos(gw, record.body, ceiling + 1) > 600_000
    budget = generation["thinkingConfig"]
    assert list(budget.values()) == [ceiling]  # 8000 lowered to the ceiling, same field
    row = only_row(gw, key_id)
    assert row.streamed is True
    assert row.output_ceiling == ceiling
    assert row.output_tokens == ceiling  # 100 thoughts + the text, cut at the ceiling
    assert row.reasoning_tokens == 100
    assert row.cost_nanos == row.input_tokens * 300 + ceiling * 2_500


def test_upstream_error_mid_stream_is_relayed_and_recorded(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-broken")
    with httpx2.stream(
        "POST",
        f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
        headers={
            "x-goog-api-key": secret,
            "x-sim-output-tokens": "40",
            "x-sim-error-after-chunks": "2",
        },
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    ) as response:
        assert response.status_code == 200
        data = response.read()
    # (the relay re-frames events with bare \n separators, as it does for every dialect)
    blocks = [block for block in data.replace(b"\r\n", b"\n").split(b"\n\n") if block]
    assert len(blocks) == 3
    error = orjson.loads(blocks[-1].removeprefix(b"data: "))["error"]
    assert error["status"] == "UNAVAILABLE"
    row = only_row(gw, gw.last_key_id)
    assert row.error is not None
    assert "UNAVAILABLE" in row.error
    assert row.usage_estimated is True
    assert row.output_tokens > 0  # what was generated before the error, estimated


def test_json_array_closed_without_a_finish_reason_gets_the_error_inside(
    gw: GatewayHarness,
) -> None:
    """A JSON-array stream whose ``]`` comes while no candidate has a ``finishReason``
    ended unfinished: the error spendgate adds is the array's last element, before its
    ``]``, so the body is still one JSON array (it was appended after the ``]``)."""
    secret = gw.create_key(user="u-gem-unfinished")
    response = httpx2.post(
        f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent",
        headers={"x-goog-api-key": secret, "x-sim-no-finish": "1", "x-sim-output-tokens": "30"},
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )
    assert response.status_code == 200
    chunks = orjson.loads(response.content)
    assert chunks[-1]["error"]["status"] == "INTERNAL"
    assert "without its terminal event" in chunks[-1]["error"]["message"]
    assert all("finishReason" not in c["candidates"][0] for c in chunks[:-1])
    assert chunks[-2]["usageMetadata"]["candidatesTokenCount"] == 30
    row = only_row(gw, gw.last_key_id)
    assert row.error == "upstream ended the stream without its terminal event"
    assert row.output_tokens >= 30  # what was generated, at least what Gemini reported


def test_blocked_prompt_ends_the_stream_as_gemini_sent_it(gw: GatewayHarness) -> None:
    """A prompt the safety filters block gets one chunk with ``promptFeedback.blockReason``
    and no candidates, then the stream ends: that is its end, not a broken stream. The SDK
    gets the block as Gemini sent it (no error added to it, the JSON array still valid),
    and the row charges the prompt Gemini reported, believed."""
    secret = gw.create_key(user="u-gem-blocked")
    sdk = client(gw, secret, {"x-sim-block-prompt": "SAFETY"})
    chunks = list(sdk.models.generate_content_stream(model=MODEL, contents=PROMPT))
    assert len(chunks) == 1
    assert chunks[0].prompt_feedback is not None
    assert chunks[0].prompt_feedback.block_reason == types.BlockedReason.SAFETY
    assert not chunks[0].candidates
    response = httpx2.post(
        f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent",
        headers={"x-goog-api-key": secret, "x-sim-block-prompt": "SAFETY"},
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )
    (answer,) = orjson.loads(response.content)  # one JSON array, one element
    assert answer["promptFeedback"] == {"blockReason": "SAFETY"}
    rows = gw.ledger(gw.last_key_id)
    assert len(rows) == 2
    for row, record in zip(rows, records(gw)[-2:], strict=True):
        assert row.error is None
        assert row.usage_estimated is False
        assert row.input_tokens == record.input_tokens > 0
        assert row.output_tokens == 0


def test_model_listing_in_gemini_shape(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-gem-list")
    sdk = client(gw, secret)
    names = [model.name for model in sdk.models.list(config={"query_base": True})]
    assert f"models/{MODEL}" in names
    assert f"models/{ALIASED}" in names
    assert "models/gpt-4o-mini" not in names  # other dialects' models are listed elsewhere


def test_loop_detection_tells_models_in_the_path_apart(gw: GatewayHarness) -> None:
    """The model is in the path, not the body: the same prompt to two models is two
    requests for loop detection (at most 2 repeats here), the same prompt to one model
    a third time a loop, refused in Gemini's shape."""
    secret = gw.create_key(user="u-gem-loop")
    sdk = client(gw, secret)
    for model in (MODEL, MODEL, ALIASED, ALIASED):
        assert sdk.models.generate_content(model=model, contents=PROMPT).text
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.generate_content(model=MODEL, contents=PROMPT)
    assert caught.value.code == 429
    assert caught.value.status == "RESOURCE_EXHAUSTED"
    assert len(gw.ledger(gw.last_key_id)) == 4


def test_model_get_in_gemini_shape(gw: GatewayHarness) -> None:
    """``models.get`` (``GET /v1/models/{model}`` from google-genai, ``/v1beta/`` from
    Gemini CLI and older SDKs) in Gemini's shape; other dialects' models are not found."""
    secret = gw.create_key(user="u-gem-get")
    sdk = client(gw, secret)
    for name in (MODEL, ALIASED):
        model = sdk.models.get(model=name)
        assert model.name == f"models/{name}"
        assert "generateContent" in (model.supported_actions or [])
    assert (
        sdk.models.get(model=MODEL).output_token_limit
        == gw.gateway.models.get(MODEL).max_output_tokens
    )  # type: ignore[union-attr]
    with pytest.raises(genai_errors.ClientError) as caught:
        sdk.models.get(model="gpt-4o-mini")
    assert (caught.value.code, caught.value.status) == (404, "NOT_FOUND")
    for path in (f"models/{MODEL}", MODEL):
        response = httpx2.get(f"{gw.url}/v1beta/models/{path}", params={"key": secret})
        assert response.status_code == 200
        assert response.json()["name"] == f"models/{MODEL}"
