"""Calls that cost nothing upstream are never refused by a spent budget, and embeddings
reserve their input only (they produce no output tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from harness import GatewayHarness


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "tiny", "scope": "user", "match": "*", "limit_usd": "0.000001", "period": "daily"},
        {"name": "tokens", "scope": "key", "limit_tokens": 100_000, "period": "daily"},
    ]
    data["limits"] = [{"name": "rpm", "scope": "key", "requests": "1/minute"}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    path: Path = tmp_path_factory.mktemp("free") / "spendgate.db"
    harness = GatewayHarness(path, configure=configure).start()
    yield harness
    harness.stop()


def test_token_counting_is_never_refused_by_budgets_or_limits(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="counter", user="counter")
    with (
        anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0) as claude,
        openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as gpt,
    ):
        for _ in range(3):  # past the 1/minute limit, on a budget that affords nothing
            counted = claude.messages.count_tokens(
                model="claude-haiku-4-5", messages=[{"role": "user", "content": "hi"}]
            )
            assert counted.input_tokens > 0
            assert gpt.responses.input_tokens.count(model="gpt-4o-mini", input="hi").input_tokens
        with pytest.raises(openai.RateLimitError):  # a billed call is still refused
            gpt.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
    assert gw.ledger(gw.last_key_id, blocked=True)[0].blocked_by in {"tiny", "rpm:requests/minute"}
    assert {row.surface for row in gw.ledger(gw.last_key_id)} == {
        "anthropic.count_tokens",
        "openai.input_tokens",
    }


def test_embeddings_reserve_their_input_only(gw: GatewayHarness) -> None:
    """Embeddings have no output ceiling field: before this, they reserved the default
    16,384 output tokens on every budget; now their output ceiling is 0."""
    secret = gw.create_key(name="embedder", user="embedder")
    key_id = gw.last_key_id
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        client.embeddings.create(model="text-embedding-3-small", input="hello world")
    (row,) = gw.ledger(key_id)
    assert row.output_ceiling == 0
    assert row.output_tokens == 0
