"""Anthropic server tools performed and billed: result tokens in the input, use counts."""

from __future__ import annotations

from typing import Any

import anthropic
from simhttp import Raw

from spendgate.simulator.thread import SimulatorThread

CLAUDE = "claude-sonnet-4-6"
MESSAGES: list[Any] = [{"role": "user", "content": "What happened today?"}]
SEARCH: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}
FETCH: dict[str, Any] = {"type": "web_fetch_20250910", "name": "web_fetch"}
CODE: dict[str, Any] = {"type": "code_execution_20250825", "name": "code_execution"}
SEARCH_TOKENS = 5 * 2000  # results per search x tokens per result


def counted(client: anthropic.Anthropic, tools: list[Any]) -> int:
    return client.messages.count_tokens(model=CLAUDE, messages=MESSAGES, tools=tools).input_tokens


def create(client: anthropic.Anthropic, tools: list[Any], **headers: str) -> Any:
    sent = {name.replace("_", "-"): value for name, value in headers.items()}
    return client.messages.create(
        model=CLAUDE, max_tokens=1000, messages=MESSAGES, tools=tools, extra_headers=sent
    )


def test_web_search_adds_its_results_to_the_input(
    sim: SimulatorThread, claude: anthropic.Anthropic
) -> None:
    message = create(claude, [SEARCH])
    kinds = [block.type for block in message.content]
    assert kinds == ["server_tool_use", "web_search_tool_result", "text"]
    use, result, text = message.content
    assert use.name == "web_search"
    assert result.tool_use_id == use.id
    assert len(result.content) == 5
    usage = message.usage
    assert usage.input_tokens == counted(claude, [SEARCH]) + SEARCH_TOKENS
    assert usage.server_tool_use is not None
    assert usage.server_tool_use.web_search_requests == 1
    assert usage.server_tool_use.web_fetch_requests == 0
    assert usage.output_tokens > len(text.text.split())  # the query is output too
    record = sim.records[-2]  # the last one is the count
    assert record.tool_result_tokens == SEARCH_TOKENS
    assert record.server_tool_uses == {"web_search": 1}
    assert record.output_tokens == usage.output_tokens
    assert record.billed["tool_result_tokens"] == SEARCH_TOKENS


def test_use_counts_follow_the_header_and_max_uses(claude: anthropic.Anthropic) -> None:
    three = create(claude, [SEARCH], x_sim_server_tool_uses="3")
    assert three.usage.server_tool_use.web_search_requests == 3
    assert three.usage.input_tokens == counted(claude, [SEARCH]) + 3 * SEARCH_TOKENS
    capped_tool = {**SEARCH, "max_uses": 2}
    capped = create(claude, [capped_tool], x_sim_server_tool_uses="3")
    assert capped.usage.server_tool_use.web_search_requests == 2
    none = create(claude, [SEARCH], x_sim_server_tool_uses="0")
    assert none.usage.server_tool_use.web_search_requests == 0
    assert [block.type for block in none.content] == ["text"]


def test_fetch_and_code_execution(sim: SimulatorThread, claude: anthropic.Anthropic) -> None:
    tools = [SEARCH, {**FETCH, "max_content_tokens": 1500}, CODE]
    headers = {"x_sim_server_tool_uses": "web_search=0,web_fetch=2,code_execution=1"}
    message = create(claude, tools, **headers)
    kinds = [block.type for block in message.content]
    assert kinds == [
        "server_tool_use",
        "web_fetch_tool_result",
        "server_tool_use",
        "web_fetch_tool_result",
        "server_tool_use",
        "bash_code_execution_tool_result",
        "text",
    ]
    assert message.content[4].name == "bash_code_execution"
    usage = message.usage
    assert usage.server_tool_use.web_fetch_requests == 2
    assert usage.server_tool_use.web_search_requests == 0
    assert usage.input_tokens == counted(claude, tools) + 2 * 1500 + 200
    assert sim.records[-2].server_tool_uses == {"web_fetch": 2, "code_execution": 1}


def test_result_tokens_header(claude: anthropic.Anthropic) -> None:
    message = create(claude, [SEARCH], x_sim_tool_result_tokens="100")
    assert message.usage.input_tokens == counted(claude, [SEARCH]) + 5 * 100


def test_streamed_uses_and_cumulative_delta_usage(
    sim: SimulatorThread, claude: anthropic.Anthropic, raw: Raw
) -> None:
    with claude.messages.stream(
        model=CLAUDE, max_tokens=1000, messages=MESSAGES, tools=[SEARCH]
    ) as stream:
        final = stream.get_final_message()
    assert [block.type for block in final.content] == [
        "server_tool_use",
        "web_search_tool_result",
        "text",
    ]
    assert final.content[0].input == {"query": "simulated query 1"}
    assert final.usage.input_tokens == counted(claude, [SEARCH]) + SEARCH_TOKENS
    assert final.usage.server_tool_use is not None
    assert final.usage.server_tool_use.web_search_requests == 1
    body = {"model": CLAUDE, "max_tokens": 100, "messages": MESSAGES, "tools": [SEARCH]}
    events = raw.post("/v1/messages", {**body, "stream": True}).events()
    start = events[0][1]["message"]["usage"]
    delta = next(data for name, data in events if name == "message_delta")["usage"]
    assert start["server_tool_use"] == {"web_search_requests": 0, "web_fetch_requests": 0}
    assert delta["input_tokens"] == start["input_tokens"] + SEARCH_TOKENS
    assert delta["server_tool_use"] == {"web_search_requests": 1, "web_fetch_requests": 0}
    assert sim.records[-1].usage_reported is not None
    assert sim.records[-1].usage_reported["input_tokens"] == delta["input_tokens"]


def test_no_server_tools_no_server_tool_usage(claude: anthropic.Anthropic) -> None:
    custom = {"name": "f", "input_schema": {"type": "object"}}
    message = create(claude, [custom])
    assert message.usage.server_tool_use is None
