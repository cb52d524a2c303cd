"""Codex's real tool list through the simulator (issue 12, item 9): a tool schema with a
property named ``type`` crashed ``tokens.value_tokens`` (``TypeError: unhashable type:
'dict'``), so every test with Codex's tools got a 500."""

from __future__ import annotations

from simhttp import Raw

from codex_shapes import CODEX_TOOLS, codex_body
from spendgate.simulator.thread import SimulatorThread
from spendgate.simulator.tokens import responses_input_tokens, value_tokens


def test_every_codex_tool_is_counted() -> None:
    for tool in CODEX_TOOLS:
        assert value_tokens(tool) > 0, tool["name"]
    body = codex_body("gpt-6.1-sol", "Fix the failing test.")
    without = {key: value for key, value in body.items() if key != "tools"}
    assert responses_input_tokens(body) == (
        responses_input_tokens(without) + value_tokens(CODEX_TOOLS)
    )


def test_a_codex_turn_is_answered_and_billed_for_its_tools(raw: Raw, sim: SimulatorThread) -> None:
    answer = raw.post("/v1/responses", codex_body("gpt-6.1-sol", "Fix the failing test."))
    assert answer.status == 200, answer.data
    events = answer.events()
    assert events[-1][0] == "response.completed"
    usage = events[-1][1]["response"]["usage"]
    plain = raw.post(
        "/v1/responses",
        {**codex_body("gpt-6.1-sol", "Fix the failing test."), "tools": []},
    )
    plain_usage = plain.events()[-1][1]["response"]["usage"]
    assert usage["input_tokens"] == plain_usage["input_tokens"] + value_tokens(CODEX_TOOLS)
    (record, _) = sim.records
    assert record.input_tokens == usage["input_tokens"]
