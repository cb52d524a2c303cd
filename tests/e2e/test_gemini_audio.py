"""Gemini audio input: billed at the model's audio input rate (gemini-2.5-flash: $1.00 per
1M tokens against $0.30 for text), settled from ``promptTokensDetails`` and reserved at
that rate when the body may hold audio; and Gemini's method paths asked wrongly (a wrong HTTP
method: 405; a method not served: 404)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import types

from harness import GatewayHarness, with_gemini
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.pipeline.worst_case import input_upper_bound

MODEL = "gemini-2.5-flash"  # $0.30 input, $1.00 audio input, $2.50 output per 1M tokens
LIMIT_NANOS = 10_000_000  # $0.01
AUDIO = base64.b64encode(bytes(range(256)) * 120).decode()  # 30,720 bytes: 1,920 tokens


def configure(data: dict[str, Any]) -> None:
    with_gemini(data, MODEL)
    data["budgets"] = [
        {"name": "audio", "scope": "user", "match": "u-audio", "limit_usd": "0.01"},
    ]
    data["budget_settings"] = {"timezone": "UTC", "min_output_tokens": 16}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("gemini-audio") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def test_audio_input_is_reserved_and_settled_at_the_audio_rate(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-audio")
    key_id = gw.last_key_id
    options = types.HttpOptions(
        base_url=gw.url,
        headers={"x-sim-output-tokens": "40"},
        timeout=10_000,
        httpx_client=httpx2.Client(),
    )
    sdk = genai.Client(api_key=secret, http_options=options)
    audio = types.Part.from_bytes(data=base64.b64decode(AUDIO), mime_type="audio/wav")
    try:
        answer = sdk.models.generate_content(
            model=MODEL,
            contents=["Transcribe this.", audio],
            config=types.GenerateContentConfig(max_output_tokens=8000),
        )
    finally:
        sdk.close()
        sdk._api_client._httpx_client.close()
    meta = answer.usage_metadata
    assert meta is not None
    assert meta.prompt_tokens_details is not None
    details = {d.modality.value: d.token_count for d in meta.prompt_tokens_details if d.modality}
    assert details["AUDIO"] == 1_920
    text = details["TEXT"]
    assert text is not None
    assert meta.prompt_token_count == text + 1_920
    # settled: the audio at $1.00/M, the text at $0.30/M, the output at $2.50/M
    row = gw.ledger(key_id)[-1]
    assert row.cost_nanos == text * 300 + 1_920 * 1_000 + 40 * 2_500
    # reserved: every input token at the audio rate, so the output ceiling is clamped to
    # what the budget leaves after that
    record = gw.sim.records[-1]
    body = record.body
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    price = route.price
    assert price is not None
    count = tokens.count_gemini_input(MODEL, body)
    worst = worst_case(
        price,
        input_tokens=input_upper_bound(count.tokens, price.max_input_tokens),
        input_exact=count.exact,
        ceiling=8000,
        choices=1,
        cache_write=False,
        cache_write_1h=False,
        audio=True,
    )
    assert worst.input_cost >= row.cost_nanos - 40 * 2_500
    assert body["generationConfig"]["maxOutputTokens"] == worst.affordable(Unit.NANOS, LIMIT_NANOS)


def test_a_cut_stream_without_usage_estimates_its_input_at_the_audio_rate(
    gw: GatewayHarness,
) -> None:
    secret = gw.create_key(user="u-audio")
    key_id = gw.last_key_id
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": "Transcribe this."},
                    {"inlineData": {"mimeType": "audio/wav", "data": AUDIO}},
                ],
            }
        ],
        "generationConfig": {"maxOutputTokens": 200},
    }
    with httpx2.stream(
        "POST",
        f"{gw.url}/v1beta/models/{MODEL}:streamGenerateContent?alt=sse",
        headers={
            "x-goog-api-key": secret,
            "x-sim-output-tokens": "40",
            "x-sim-die-after-chunks": "2",
            "x-sim-no-usage": "1",
        },
        json=body,
    ) as response:
        response.read()
    row = gw.ledger(key_id)[-1]
    assert row.usage_estimated is True
    assert row.output_tokens > 0
    # the body's input counted offline, all of it at the audio rate (an upper bound)
    assert row.input_tokens == tokens.count_gemini_input(MODEL, body).tokens
    assert row.cost_nanos == row.input_tokens * 1_000 + row.output_tokens * 2_500


# ----------------------------------------------------------------- method paths


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_a_served_method_asked_with_get_is_405_in_googles_shape(
    gw: GatewayHarness, version: str
) -> None:
    secret = gw.create_key(user="u-audio")
    answer = httpx2.get(
        f"{gw.url}/{version}/models/{MODEL}:generateContent", headers={"x-goog-api-key": secret}
    )
    assert answer.status_code == 405
    error = answer.json()["error"]
    assert error["code"] == 405
    assert "does not exist" not in error["message"]


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_an_unserved_method_is_404_in_googles_shape(gw: GatewayHarness, version: str) -> None:
    secret = gw.create_key(user="u-audio")
    answer = httpx2.post(
        f"{gw.url}/{version}/models/{MODEL}:embedContent",
        headers={"x-goog-api-key": secret},
        json={"content": {"parts": [{"text": "hi"}]}},
    )
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert (error["code"], error["status"]) == (404, "NOT_FOUND")
    assert "embedContent" in error["message"]


def test_a_fine_tuned_openai_model_with_colons_is_still_looked_up(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-audio")
    answer = httpx2.get(
        f"{gw.url}/v1/models/ft:gpt-4o-mini:acme::abc123",
        headers={"authorization": f"Bearer {secret}"},
    )
    assert answer.status_code == 404
    assert "does not exist" in answer.json()["error"]["message"]
