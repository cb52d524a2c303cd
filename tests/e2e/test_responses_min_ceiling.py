"""End to end: the Responses API refuses a ``max_output_tokens`` below 16 (OpenAPI spec:
``minimum: 16``; the simulator does too). A budget that affords fewer than 16 output tokens
must not clamp a Responses request below that, whatever ``budget_settings.
min_output_tokens`` says: the provider would answer 400 (the caller sees a provider
validation error about a field it never sent, instead of the budget's refusal). Such a
request is refused as over budget before anything is sent; one the budget affords 16 or
more output tokens is clamped as usual."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.pipeline.worst_case import input_upper_bound

MODEL = "gpt-4o-mini"  # 128,000-token window
BODY: dict[str, Any] = {"model": MODEL, "input": "Write about careful gateways."}  # no ceiling
INPUT_BOUND = input_upper_bound(tokens.count_responses_input(MODEL, BODY).tokens, 128_000)


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": name, "scope": "user", "match": name, "limit_tokens": INPUT_BOUND + output}
        for name, output in (("ten-left", 10), ("twenty-left", 20))
    ]
    data["budget_settings"] = {"min_output_tokens": 1}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("responses-min") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def test_a_budget_never_clamps_a_response_below_sixteen_tokens(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="ten-left")
    before = len(gw.sim.records)
    with (
        openai.OpenAI(api_key=secret, base_url=gw.openai_base_url) as client,
        pytest.raises(openai.RateLimitError) as caught,
    ):
        client.responses.create(**BODY)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(gw.sim.records) == before  # nothing sent upstream
    assert gw.ledger(gw.last_key_id) == []
    (refusal,) = gw.ledger(gw.last_key_id, blocked=True)
    assert refusal.blocked_by == "ten-left"


def test_sixteen_or_more_affordable_is_clamped_as_usual(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="twenty-left")
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url) as client:
        answer = client.responses.with_raw_response.create(**BODY)
    assert answer.headers["x-spendgate-output-clamped"].startswith("20 ")
    assert gw.sim.records[-1].body["max_output_tokens"] == 20
    (row,) = gw.ledger(gw.last_key_id)
    assert row.output_ceiling == 20
