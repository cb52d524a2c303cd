"""Gemini's service tiers (``serviceTier: priority | flex`` in the request, reported back
in the response header ``x-gemini-service-tier``) are priced as the catalog lists them: the
row is settled at the rates of the tier Gemini reports, and the worst case is reserved at
the rates of the tier asked for. Real `google-genai` SDK, gateway and simulator on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx2
import pytest
from google import genai
from google.genai import types

from harness import GatewayHarness, with_gemini
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.pricing import Price
from spendgate.pipeline.worst_case import input_upper_bound

MODEL = "gemini-2.5-flash"
# Per token, in nano-dollars: standard $0.30 / $0.03 cached / $2.50 output per 1M;
# Priority 1.8x; Flex $0.15 / $0.03 / $1.25 (the catalog's `google` family).
PRIORITY = (540, 54, 4_500)
FLEX = (150, 30, 1_250)
PROMPT = "Describe a lighthouse at dusk in two sentences."
SIM = {"x-sim-output-tokens": "40", "x-sim-reasoning-tokens": "15", "x-sim-cached-tokens": "8"}
ASKED_CEILING = 2_000


def configure(data: dict[str, Any]) -> None:
    with_gemini(data, MODEL)
    data["budgets"] = [
        {
            "name": "tight",
            "scope": "user",
            "match": "u-tight",
            "limit_usd": "0.0065",  # the standard worst case of 2,000 tokens fits; Priority's not
            "period": "daily",
        }
    ]
    data["budget_settings"] = {"timezone": "UTC", "min_output_tokens": 16}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("gemini-tiers") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


@contextmanager
def sdk(gw: GatewayHarness, secret: str) -> Iterator[genai.Client]:
    """The SDK on a client of its own, closed when the block ends (no socket left open)."""
    http = httpx2.Client()
    options = types.HttpOptions(base_url=gw.url, headers=SIM, timeout=10_000, httpx_client=http)
    client = genai.Client(api_key=secret, http_options=options)
    try:
        yield client
    finally:
        client.close()
        http.close()


def price(gw: GatewayHarness) -> Price:
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    assert route.price is not None
    return route.price


def by_hand(prompt: int, rates: tuple[int, int, int]) -> int:
    """(prompt - 8) uncached, 8 cached, 40 output (25 candidates + 15 thoughts)."""
    uncached, cached, output = rates
    return (prompt - 8) * uncached + 8 * cached + 40 * output


def test_priority_answer_is_settled_at_priority_rates(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-priority")
    config = types.GenerateContentConfig(max_output_tokens=200, service_tier="priority")
    with sdk(gw, secret) as client:
        answer = client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    meta = answer.usage_metadata
    assert meta is not None
    assert meta.prompt_token_count is not None
    assert gw.sim.records[-1].body["serviceTier"] == "priority"
    assert answer.sdk_http_response is not None
    assert answer.sdk_http_response.headers is not None
    assert answer.sdk_http_response.headers["x-gemini-service-tier"] == "priority"
    [row] = gw.ledger(gw.last_key_id)
    assert row.service_tier == "priority"
    assert row.cost_nanos == by_hand(meta.prompt_token_count, PRIORITY)


def test_flex_stream_is_settled_at_flex_rates(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-flex")
    config = types.GenerateContentConfig(max_output_tokens=200, service_tier="flex")
    with sdk(gw, secret) as client:
        stream = client.models.generate_content_stream(model=MODEL, contents=PROMPT, config=config)
        chunks = list(stream)
    meta = chunks[-1].usage_metadata
    assert meta is not None
    assert meta.prompt_token_count is not None
    [row] = gw.ledger(gw.last_key_id)
    assert row.streamed is True
    assert row.service_tier == "flex"
    assert row.cost_nanos == by_hand(meta.prompt_token_count, FLEX)


def test_the_worst_case_is_reserved_at_the_tier_asked_for(gw: GatewayHarness) -> None:
    """A hard budget that affords the asked ceiling at standard rates but not at Priority's
    clamps a Priority request to what it affords at Priority's rates."""
    secret = gw.create_key(user="u-tight")
    config = types.GenerateContentConfig(max_output_tokens=ASKED_CEILING, service_tier="priority")
    with sdk(gw, secret) as client:
        client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    body = gw.sim.records[-1].body
    count = tokens.count_gemini_input(MODEL, {"contents": body["contents"]})
    bound = input_upper_bound(count.tokens, price(gw).max_input_tokens)

    def worst(tier: str | None) -> Any:
        return worst_case(
            price(gw),
            input_tokens=bound,
            input_exact=count.exact,
            ceiling=ASKED_CEILING,
            choices=1,
            cache_write=False,
            cache_write_1h=False,
            tiers=(tier,),
        )

    limit = 6_500_000
    assert worst(None).amount(Unit.NANOS, ASKED_CEILING) <= limit  # standard: no clamp
    affordable = worst("priority").affordable(Unit.NANOS, limit)
    assert affordable < ASKED_CEILING
    assert body["generationConfig"]["maxOutputTokens"] == affordable


def test_priority_downgraded_to_standard_is_settled_at_standard_rates(gw: GatewayHarness) -> None:
    """Gemini serves a Priority request over its limit at the standard tier and says so in
    ``x-gemini-service-tier``: the row follows what it says, not what was asked."""
    secret = gw.create_key(user="u-downgraded")
    config = types.GenerateContentConfig(
        max_output_tokens=200,
        service_tier="priority",
        http_options=types.HttpOptions(headers={**SIM, "x-sim-service-tier": "standard"}),
    )
    with sdk(gw, secret) as client:
        answer = client.models.generate_content(model=MODEL, contents=PROMPT, config=config)
    meta = answer.usage_metadata
    assert meta is not None
    assert meta.prompt_token_count is not None
    [row] = gw.ledger(gw.last_key_id)
    assert row.service_tier is None
    assert row.cost_nanos == by_hand(meta.prompt_token_count, (300, 30, 2_500))
