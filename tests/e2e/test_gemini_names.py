"""End to end: Gemini's JSON reads a field under its JSON name or its proto name alike
(``generationConfig`` / ``generation_config``, ``maxOutputTokens`` /
``max_output_tokens``, ``candidateCount`` / ``candidate_count``, ``cachedContent`` /
``cached_content``): Google's own REST examples write ``system_instruction``. The fields
that decide a request's price are read, and its ceiling written, under whichever name the
request used; a field sent under both names is refused before anything is spent.

The simulator reads both names as Gemini does, and refuses a field named twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import pytest

from harness import GatewayHarness, with_gemini

MODEL = "gemini-2.5-flash"  # $0.30 input, $2.50 output per 1M tokens; 65,536 output max
PROMPT = "Describe a lighthouse at dusk in two sentences."


def configure(data: dict[str, Any]) -> None:
    with_gemini(data, MODEL)
    data["budgets"] = [
        {
            "name": f"names-{user}",
            "scope": "user",
            "match": user,
            "limit_usd": "0.0006",  # about 240 output tokens
            "period": "daily",
        }
        for user in ("u-camel", "u-snake", "u-snake-cache")
    ]
    data["budgets"].append(
        {"name": "plain", "scope": "user", "match": "u-plain", "limit_usd": "1", "period": "daily"}
    )
    data["budget_settings"] = {"timezone": "UTC", "min_output_tokens": 16}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("gemini-names") / "spendgate.db",
        configure=configure,
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def generate(gw: GatewayHarness, secret: str, body: dict[str, Any]) -> httpx2.Response:
    return httpx2.post(
        f"{gw.url}/v1beta/models/{MODEL}:generateContent",
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}], **body},
        headers={"x-goog-api-key": secret, "x-sim-output-tokens": "5000"},
    )


def test_snake_case_ceiling_is_the_ceiling_priced_and_sent(gw: GatewayHarness) -> None:
    """``generation_config.max_output_tokens: 40`` is the request's ceiling: reserved as
    such, not clamped, and the body goes upstream with that one field, not with a second
    ``generationConfig`` holding the model's maximum beside it."""
    secret = gw.create_key(user="u-plain")
    response = generate(gw, secret, {"generation_config": {"max_output_tokens": 40}})
    assert response.status_code == 200, response.text
    assert "x-spendgate-output-clamped" not in response.headers
    sent = gw.sim.records[-1].body
    assert "generationConfig" not in sent
    assert sent["generation_config"] == {"max_output_tokens": 40}
    (row,) = gw.ledger(gw.last_key_id)
    assert row.output_ceiling == 40
    assert row.clamped_from is None
    assert row.output_tokens == 40


def test_a_budget_clamps_either_spelling_alike(gw: GatewayHarness) -> None:
    """Two candidates and a thinking budget, in either spelling, on the same budget: the
    same clamped ceiling, written where the request put it (the thinking budget lowered
    with it); ``candidate_count: 2`` is priced as two answers, like ``candidateCount``."""
    answers = {}
    for user, config in (
        (
            "u-camel",
            {
                "generationConfig": {
                    "candidateCount": 2,
                    "thinkingConfig": {"thinkingBudget": 8000},
                }
            },
        ),
        (
            "u-snake",
            {
                "generation_config": {
                    "candidate_count": 2,
                    "thinking_config": {"thinking_budget": 8000},
                }
            },
        ),
    ):
        secret = gw.create_key(user=user)
        response = generate(gw, secret, config)
        assert response.status_code == 200, response.text
        (row,) = gw.ledger(gw.last_key_id)
        answers[user] = (response.headers["x-spendgate-output-clamped"], row.output_ceiling)
        sent = gw.sim.records[-1].body
        if user == "u-snake":
            assert "generationConfig" not in sent
            ceiling = row.output_ceiling
            assert sent["generation_config"] == {
                "candidate_count": 2,
                "thinking_config": {"thinking_budget": ceiling},
                "maxOutputTokens": ceiling,  # Gemini reads either name
            }
    assert answers["u-snake"] == answers["u-camel"]
    ceiling = answers["u-camel"][1]
    assert ceiling is not None
    # two answers at the ceiling fit $0.0006; one answer alone would have been allowed twice
    assert 16 <= ceiling * 2 * 2_500 <= 600_000


def test_snake_case_cached_content_is_input_the_body_does_not_show(gw: GatewayHarness) -> None:
    """A named cache is input the body does not show: the model's whole input window is
    reserved for it (hidden_input: bound), more than this budget affords, whichever name
    the field has; the same request without the cache fits (clamped)."""
    secret = gw.create_key(user="u-snake-cache")
    before = len(gw.sim.records)
    response = generate(gw, secret, {"cached_content": "cachedContents/abc123"})
    assert response.status_code == 429, response.text
    assert response.json()["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert len(gw.sim.records) == before
    response = generate(gw, secret, {})
    assert response.status_code == 200, response.text
    assert "x-spendgate-output-clamped" in response.headers


@pytest.mark.parametrize(
    "body",
    [
        {"generationConfig": {"maxOutputTokens": 40}, "generation_config": {"candidateCount": 2}},
        {"generationConfig": {"maxOutputTokens": 40, "max_output_tokens": 4000}},
        {"generationConfig": {"candidateCount": 1, "candidate_count": 8}},
        {"generationConfig": {"thinkingConfig": {"thinkingBudget": 10, "thinking_budget": 900}}},
    ],
)
def test_a_field_under_both_names_is_refused(gw: GatewayHarness, body: dict[str, Any]) -> None:
    secret = gw.create_key(user="u-twice")
    before = len(gw.sim.records)
    response = generate(gw, secret, body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert "cannot tell which one" in response.json()["error"]["message"]
    assert len(gw.sim.records) == before
