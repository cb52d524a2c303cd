"""A reservation never exceeds the model's maximum output (issue 12, item 5).

Claude Code asks for ``max_tokens: 128000`` on its default model; a model declared with a
maximum output of 64,000 can never write more than that, so spendgate reserves at most
64,000, says so (``x-spendgate-output-clamped: 64000 (requested 128000; the model's
maximum is 64000)``, the ledger's ``clamped_from`` / ``output_ceiling``) and sends the
reserved ceiling upstream (``max_tokens``, with Claude's ``thinking.budget_tokens`` kept
below it), so the provider stops where the reservation does instead of refusing a ceiling
above the model's maximum. A price that states no limits (a negotiated override) keeps the
catalog's. A request no budget applies to is forwarded as it came.

Tokens are counted with the tokenizer of the model the provider runs (issue 12, item 6): a
gateway name such as ``research`` for ``gpt-6.1-sol`` is counted exactly with o200k_base,
not with the x1.75 upper bound for unknown names.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.ledger import LedgerRow
from spendgate.simulator.records import RequestRecord

PROMPT = [{"role": "user", "content": "Write about careful gateways."}]
MODEL_MAX = 64_000
ASKED = 128_000  # Claude Code's max_tokens on its default model (CLIENTS.md §12.1)


def configure(data: dict[str, Any]) -> None:
    data["models"]["opus-64k"] = {
        "provider": "anthropic",
        "upstream_model": "claude-opus-5-5",
        "price": {"input": "4", "output": "20", "max_output_tokens": MODEL_MAX},
    }
    data["models"]["research"] = {"provider": "openai", "upstream_model": "gpt-6.1-sol"}
    # a negotiated price with no limits of its own: claude-haiku-4-5 keeps its 64K maximum
    data["pricing"]["overrides"] = {"claude-haiku-4-5": {"input": "0.9", "output": "4.5"}}
    data["budgets"] = [
        {"name": "ample", "scope": "tag", "match": "ample", "limit_usd": "100", "period": "daily"},
        {"name": "tight", "scope": "tag", "match": "tight", "limit_usd": "0.05", "period": "daily"},
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("model-max") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def the_record(gw: GatewayHarness, tag: str) -> RequestRecord:
    (record,) = [r for r in list(gw.sim.records) if r.headers.get("x-test-id") == tag]
    return record


def the_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    deadline = time.monotonic() + 5
    while not gw.ledger(key_id) and time.monotonic() < deadline:
        time.sleep(0.01)
    (row,) = gw.ledger(key_id)
    return row


def claude_code_turn(
    gw: GatewayHarness, model: str, tags: list[str], **fields: Any
) -> tuple[dict[str, str], RequestRecord, LedgerRow]:
    """A streamed Messages call as Claude Code makes it on its default model."""
    secret = gw.create_key(name=f"cc-{model}", tags=tags)
    key_id = gw.last_key_id
    tag = uuid.uuid4().hex
    client = gw.sdk_client("anthropic", secret, max_retries=0)
    with (
        client,
        client.messages.with_streaming_response.create(
            model=model,
            max_tokens=fields.pop("max_tokens", ASKED),
            messages=PROMPT,
            stream=True,
            extra_headers={"x-test-id": tag, "x-claude-code-session-id": str(uuid.uuid4())},
            **fields,
        ) as response,
    ):
        headers = dict(response.headers)
        lines = list(response.iter_lines())
    assert any("message_stop" in line for line in lines)
    return headers, the_record(gw, tag), the_row(gw, key_id)


def test_a_ceiling_above_the_models_maximum_is_reserved_and_sent_as_the_maximum(
    gw: GatewayHarness,
) -> None:
    thinking = {"type": "enabled", "budget_tokens": 100_000}
    headers, record, row = claude_code_turn(gw, "opus-64k", ["ample"], thinking=thinking)
    assert headers["x-spendgate-output-clamped"] == (
        f"{MODEL_MAX} (requested {ASKED}; the model's maximum is {MODEL_MAX})"
    )
    assert row.output_ceiling == MODEL_MAX
    assert row.clamped_from == ASKED
    assert record.body["max_tokens"] == MODEL_MAX
    assert record.body["thinking"] == {"type": "enabled", "budget_tokens": MODEL_MAX - 1}
    assert row.status == 200
    assert row.output_tokens > 0


def test_a_budget_clamp_below_the_maximum_names_both(gw: GatewayHarness) -> None:
    headers, record, row = claude_code_turn(gw, "opus-64k", ["tight"])
    ceiling = int(headers["x-spendgate-output-clamped"].split()[0])
    assert 0 < ceiling < MODEL_MAX
    assert headers["x-spendgate-output-clamped"] == (
        f"{ceiling} (requested {ASKED}; the model's maximum is {MODEL_MAX})"
    )
    assert (row.output_ceiling, row.clamped_from) == (ceiling, ASKED)
    assert record.body["max_tokens"] == ceiling


def test_a_ceiling_within_the_maximum_is_forwarded_unchanged(gw: GatewayHarness) -> None:
    headers, record, row = claude_code_turn(gw, "opus-64k", ["ample"], max_tokens=32_000)
    assert "x-spendgate-output-clamped" not in headers
    assert (row.output_ceiling, row.clamped_from) == (32_000, None)
    assert record.body["max_tokens"] == 32_000


def test_an_override_without_limits_keeps_the_catalogs_maximum(gw: GatewayHarness) -> None:
    headers, record, row = claude_code_turn(gw, "claude-haiku-4-5", ["ample"])
    assert headers["x-spendgate-output-clamped"] == (
        f"64000 (requested {ASKED}; the model's maximum is 64000)"
    )
    assert (row.output_ceiling, row.clamped_from) == (64_000, ASKED)
    assert record.body["max_tokens"] == 64_000
    assert row.cost_nanos == row.input_tokens * 900 + row.output_tokens * 4_500


def test_responses_above_the_maximum_are_clamped_too(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="codex-max", tags=["ample"])
    tag = uuid.uuid4().hex
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        raw = client.responses.with_raw_response.create(
            model="gpt-4o-mini",
            input="Write about careful gateways.",
            max_output_tokens=100_000,
            extra_headers={"x-test-id": tag},
        )
    assert raw.headers["x-spendgate-output-clamped"] == (
        "16384 (requested 100000; the model's maximum is 16384)"
    )
    assert the_record(gw, tag).body["max_output_tokens"] == 16_384
    row = the_row(gw, gw.last_key_id)
    assert (row.output_ceiling, row.clamped_from) == (16_384, 100_000)


def test_without_a_budget_the_body_is_forwarded_as_it_came(gw: GatewayHarness) -> None:
    headers, record, row = claude_code_turn(gw, "opus-64k", [])
    assert "x-spendgate-output-clamped" not in headers
    assert record.body["max_tokens"] == ASKED
    assert row.status == 200


def test_a_house_name_is_counted_with_its_upstream_models_tokenizer(gw: GatewayHarness) -> None:
    """No usage reported: the row is charged the offline count of the body, which for
    ``research`` (gpt-6.1-sol) is o200k_base's exact count, not the x1.75 bound."""
    secret = gw.create_key(name="research", tags=["ample"])
    text = "Explain how a careful gateway meters an agent's requests. " * 200
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        client.responses.create(
            model="research",
            input=text,
            max_output_tokens=100,
            extra_headers={"x-sim-no-usage": "1"},
        )
    row = the_row(gw, gw.last_key_id)
    assert row.usage_estimated
    body = {"model": "gpt-6.1-sol", "input": text, "max_output_tokens": 100}
    exact = tokens.count_responses_input("gpt-6.1-sol", body)
    assert exact.exact
    assert row.input_tokens == exact.tokens
    assert tokens.count_responses_input("research", body).tokens > exact.tokens * 3 // 2
