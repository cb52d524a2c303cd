"""End to end: a Responses answer that is a tool call's input (Codex's freeform
``apply_patch``: a ``custom_tool_call``, streamed as ``response.custom_tool_call_input.delta``)
is output the model generated, billed like any other. Where spendgate must count the output
itself, it counts that input too: the streaming guard cuts a call that runs past the
reserved ceiling, and an answer whose usage cannot be believed is charged the call's
input as estimated output (before, both saw no output at all: the guard never fired, and
the upstream's real output was charged as 0 tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx2
import orjson
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens

MODEL = "gpt-4o-mini"
CEILING = 50
BODY: dict[str, Any] = {
    "model": MODEL,
    "input": "Fix the failing test.",
    "tools": [{"type": "custom", "name": "apply_patch", "description": "Apply a patch."}],
    "tool_choice": {"type": "custom", "name": "apply_patch"},
    "max_output_tokens": CEILING,
}


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "ample", "scope": "user", "match": "*", "limit_usd": "10", "period": "daily"}
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("responses-tools") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def post(gw: GatewayHarness, secret: str, headers: dict[str, str], **extra: Any) -> bytes:
    response = httpx2.post(
        f"{gw.url}/v1/responses",
        json={**BODY, **extra},
        headers={"authorization": f"Bearer {secret}", **headers},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.content


def events_of(body: bytes) -> list[dict[str, Any]]:
    return [
        orjson.loads(line.removeprefix(b"data: "))
        for line in body.splitlines()
        if line.startswith(b"data: ")
    ]


def test_a_tool_call_past_its_ceiling_is_cut_by_the_guard(gw: GatewayHarness) -> None:
    """An upstream ignoring ``max_output_tokens`` while writing a patch is cut at the
    reserved ceiling, and the stream ends with ``response.incomplete``."""
    secret = gw.create_key(user="u-guard")
    headers = {"x-sim-ignore-max": "1", "x-sim-output-tokens": "3000"}
    events = events_of(post(gw, secret, headers, stream=True))
    assert events[-1]["type"] == "response.incomplete"
    assert any(e["type"] == "response.custom_tool_call_input.delta" for e in events)
    (row,) = gw.ledger(gw.last_key_id)
    assert row.error == (
        f"stream ended by spendgate at the reserved output ceiling ({CEILING} tokens)"
    )
    assert row.output_tokens == CEILING
    assert gw.sim.records[-1].output_tokens == 3000  # what the upstream meant to write


@pytest.mark.parametrize("stream", [True, False])
def test_missing_usage_charges_the_tool_input_as_output(gw: GatewayHarness, stream: bool) -> None:
    """No usage from the provider: the estimate counts the call's input as output,
    streamed or whole."""
    secret = gw.create_key(user=f"u-estimate-{stream}")
    body = post(gw, secret, {"x-sim-no-usage": "1", "x-sim-output-tokens": "40"}, stream=stream)
    if stream:
        events = events_of(body)
        text = "".join(
            e["delta"] for e in events if e["type"] == "response.custom_tool_call_input.delta"
        )
    else:
        (item,) = orjson.loads(body)["output"]
        assert item["type"] == "custom_tool_call"
        text = item["input"]
    (row,) = gw.ledger(gw.last_key_id)
    assert row.usage_estimated is True
    assert row.output_tokens == tokens.count_output_text(MODEL, text).tokens > 0
