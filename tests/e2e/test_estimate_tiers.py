"""A request the provider reported no usage for is estimated in the service tier it asked
for, as its worst case was reserved: a Priority request whose answer carries no usage (or
whose stream ends before its usage chunk) was estimated at the standard rates, half its
bill on o4-mini. Real `openai` SDK, gateway and simulator on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness import GatewayHarness
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage

MODEL = "o4-mini"  # $1.10 / $4.40 per 1M tokens; Priority $2.00 / $8.00
NO_USAGE = {"x-sim-no-usage": "1", "x-sim-output-tokens": "30"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path_factory.mktemp("estimate-tiers") / "spendgate.db").start()
    try:
        yield harness
    finally:
        harness.stop()


def chat(gw: GatewayHarness, stream: bool, tier: str) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_completion_tokens": 100,
        "messages": [{"role": "user", "content": "hello"}],
        "service_tier": tier,
        "extra_headers": NO_USAGE,
    }
    with gw.sdk_client("openai", gw.create_key(user=f"u-{stream}-{tier}")) as client:
        if stream:
            list(client.chat.completions.create(stream=True, **body))
        else:
            client.chat.completions.create(**body)


@pytest.mark.parametrize("stream", [False, True])
def test_a_priority_request_without_usage_is_estimated_at_priority_rates(
    gw: GatewayHarness, stream: bool
) -> None:
    chat(gw, stream, "priority")
    [row] = gw.ledger(gw.last_key_id)
    assert row.service_tier == "priority"
    assert row.output_tokens == 30
    assert row.cost_nanos == row.input_tokens * 2_000 + 30 * 8_000
    price = gw.gateway.models.get(MODEL)
    assert price is not None
    assert price.price is not None
    usage = Usage(input_tokens=row.input_tokens, output_tokens=30, service_tier="priority")
    assert row.cost_nanos == cost_of(usage, price.price)


def test_a_flex_request_without_usage_is_estimated_at_flex_rates(gw: GatewayHarness) -> None:
    chat(gw, False, "flex")
    [row] = gw.ledger(gw.last_key_id)
    assert row.service_tier == "flex"
    assert row.cost_nanos == row.input_tokens * 550 + 30 * 2_200
