"""End to end, with the real ``openai`` SDK: a Chat Completions search model
(``web_search_options``) searches the web before it answers, once per request, and OpenAI
bills that call on top of the tokens. The worst case reserved it; the ledger charges it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness import GatewayHarness
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage

MODEL = "gpt-4o-mini-search-preview"  # $0.15 / $0.60 per 1M tokens, $25 per 1,000 searches
FEE_NANOS = 25_000_000
PROMPT = [{"role": "user", "content": "What happened in Lisbon today?"}]


def configure(data: dict[str, Any]) -> None:
    price = {"input": "0.15", "output": "0.60", "tool_fees": {"web_search": "0.025"}}
    data["models"][MODEL] = {"provider": "openai", "upstream_model": "gpt-4o-mini", "price": price}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("chat-search") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_search_model_request_is_charged_its_search(gw: GatewayHarness, stream: bool) -> None:
    secret = gw.create_key(user="u-search")
    with gw.sdk_client("openai", secret, max_retries=0) as sdk:
        answer = sdk.chat.completions.create(
            model=MODEL,
            messages=PROMPT,
            max_completion_tokens=50,
            web_search_options={"search_context_size": "low"},
            stream=stream,
        )
        if stream:
            list(answer)
    (row,) = gw.ledger(gw.last_key_id)
    assert row.status == 200
    assert row.tool_calls == (("web_search", 1),)
    tokens = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    price = gw.gateway.prices.get(MODEL)
    assert price is not None
    assert row.cost_nanos == cost_of(tokens, price) + FEE_NANOS


def test_a_request_without_search_is_charged_its_tokens_only(gw: GatewayHarness) -> None:
    secret = gw.create_key(user="u-no-search")
    with gw.sdk_client("openai", secret, max_retries=0) as sdk:
        sdk.chat.completions.create(model=MODEL, messages=PROMPT, max_completion_tokens=50)
    (row,) = gw.ledger(gw.last_key_id)
    assert row.tool_calls == ()
    price = gw.gateway.prices.get(MODEL)
    assert price is not None
    tokens = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    assert row.cost_nanos == cost_of(tokens, price)
