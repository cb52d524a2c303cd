"""What the provider reports: service tiers, usage anomalies, lenient-server modes, and the
billing the records expose."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest
from simhttp import Answer, Raw

from spendgate.simulator import parse_faults
from spendgate.simulator.reporting import HUGE
from spendgate.simulator.thread import SimulatorThread

GPT = "gpt-4o-mini"
CLAUDE_MODEL = "claude-sonnet-4-6"
CHAT: dict[str, Any] = {"model": GPT, "messages": [{"role": "user", "content": "hi"}]}
RESPONSES: dict[str, Any] = {"model": GPT, "input": "hi"}
CLAUDE: dict[str, Any] = {**CHAT, "model": CLAUDE_MODEL, "max_tokens": 100}
MESSAGES: list[Any] = CHAT["messages"]


@pytest.mark.parametrize(
    ("asked", "forced", "reported"),
    [
        (None, None, "default"),
        ("auto", None, "default"),
        ("default", None, "default"),
        ("flex", None, "flex"),
        ("scale", None, "scale"),
        ("priority", None, "priority"),
        ("fast", None, "priority"),
        ("auto", "priority", "priority"),
        ("flex", "default", "default"),
    ],
)
def test_openai_service_tier(
    sim: SimulatorThread, raw: Raw, asked: str | None, forced: str | None, reported: str
) -> None:
    headers = {"x-sim-service-tier": forced} if forced else {}
    tier = {"service_tier": asked} if asked else {}
    chat = raw.send("POST", "/v1/chat/completions", {**CHAT, **tier}, headers)
    assert chat.json()["service_tier"] == reported
    assert sim.records[-1].service_tier == reported
    stream = {**CHAT, **tier, "stream": True, "stream_options": {"include_usage": True}}
    chunks = raw.send("POST", "/v1/chat/completions", stream, headers).events()[:-1]
    assert {chunk["service_tier"] for _, chunk in chunks} == {reported}
    response = raw.send("POST", "/v1/responses", {**RESPONSES, **tier}, headers)
    assert response.json()["service_tier"] == reported
    events = raw.send("POST", "/v1/responses", {**RESPONSES, **tier, "stream": True}, headers)
    assert {data["response"]["service_tier"] for _, data in events.events() if "response" in data}


def test_openai_service_tier_through_the_sdk(oai: openai.OpenAI) -> None:
    completion = oai.chat.completions.create(model=GPT, messages=MESSAGES, service_tier="flex")
    assert completion.service_tier == "flex"
    response = oai.responses.create(
        model=GPT, input="hi", extra_headers={"x-sim-service-tier": "priority"}
    )
    assert response.service_tier == "priority"


@pytest.mark.parametrize(
    ("asked", "forced", "reported"),
    [
        (None, None, "standard"),
        ("auto", "priority", "priority"),
        ("standard_only", "priority", "standard"),
        ("auto", "batch", "batch"),
        (None, "turbo", "standard"),
    ],
)
def test_anthropic_service_tier(
    sim: SimulatorThread,
    claude: anthropic.Anthropic,
    asked: str | None,
    forced: str | None,
    reported: str,
) -> None:
    headers = {"x-sim-service-tier": forced} if forced else {}
    extra: Any = {"service_tier": asked} if asked else {}
    message = claude.messages.create(
        model=CLAUDE_MODEL, max_tokens=50, messages=MESSAGES, extra_headers=headers, **extra
    )
    assert message.usage.service_tier == reported
    assert sim.records[-1].service_tier == reported
    with claude.messages.stream(
        model=CLAUDE_MODEL, max_tokens=50, messages=MESSAGES, extra_headers=headers, **extra
    ) as stream:
        assert stream.get_final_message().usage.service_tier == reported


def _usage_values(answer: Answer, path: str) -> list[Any]:
    """Every usage object the answer carried (streams: all of them)."""
    if not answer.headers["content-type"].startswith("text/event-stream"):
        body = answer.json()
        return [body["usage"]] if "usage" in body else []
    found = []
    for _, data in answer.events():
        if isinstance(data, str):
            continue
        if path.endswith("messages"):
            usage = data.get("usage") or data.get("message", {}).get("usage")
        elif path.endswith("responses"):
            usage = (data.get("response") or {}).get("usage")
        else:
            usage = data.get("usage")
        if usage is not None:
            found.append(usage)
    return found


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


CHECKS = {
    "negative": lambda v: v is None or isinstance(v, str) or v < 0,
    "string": lambda v: v is None or isinstance(v, str),
    "float": lambda v: v is None or isinstance(v, str | float),
    "huge": lambda v: v is None or isinstance(v, str) or v == HUGE,
    "null": lambda v: v is None or isinstance(v, str),
}
BODIES = {
    "/v1/chat/completions": {**CHAT, "stream_options": {"include_usage": True}},
    "/v1/responses": RESPONSES,
    "/v1/messages": CLAUDE,
}


@pytest.mark.parametrize("path", list(BODIES))
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("mode", ["empty", "negative", "string", "float", "huge", "null"])
def test_usage_anomalies(
    sim: SimulatorThread, raw: Raw, path: str, stream: bool, mode: str
) -> None:
    answer = raw.post(path, {**BODIES[path], "stream": stream}, x_sim_usage=mode)
    assert answer.status == 200
    usages = _usage_values(answer, path)
    assert usages
    record = sim.records[-1]
    assert record.input_tokens > 0  # the truth is kept
    assert record.output_tokens > 0
    for usage in usages:
        if mode == "empty":
            assert usage == {}
            continue
        leaves = [leaf for leaf in _leaves(usage) if not isinstance(leaf, bool)]
        assert all(CHECKS[mode](leaf) for leaf in leaves), usage
        if mode in ("negative", "float", "huge"):
            assert any(isinstance(leaf, int | float) for leaf in leaves), usage


@pytest.mark.parametrize("path", list(BODIES))
def test_usage_missing(sim: SimulatorThread, raw: Raw, path: str) -> None:
    for stream in (False, True):
        answer = raw.post(path, {**BODIES[path], "stream": stream}, x_sim_usage="missing")
        assert _usage_values(answer, path) == []
        assert sim.records[-1].usage_reported is None
    embeddings = raw.post(
        "/v1/embeddings", {"model": "text-embedding-3-small", "input": "x"}, x_sim_usage="string"
    )
    assert embeddings.json()["usage"] == {"prompt_tokens": "1", "total_tokens": "1"}


def test_usage_faults_parse() -> None:
    assert parse_faults({"x-sim-usage": "missing"}).no_usage
    assert parse_faults({"x-sim-usage": "Huge"}).usage == "huge"
    assert parse_faults({"x-sim-usage": "weird"}).usage is None
    faults = parse_faults({"x-sim-server-tool-uses": "web_search=2, web_fetch=x"})
    assert faults.uses_of("web_search", 1) == 2
    assert faults.uses_of("web_fetch", 1) == 1
    assert parse_faults({"x-sim-server-tool-uses": "4"}).uses_of("web_fetch", 1) == 4
    assert parse_faults({"x-sim-compat": "Lenient-Stream, bogus"}).compat == {"lenient-stream"}


def test_lenient_stream(raw: Raw) -> None:
    for value in ("true", 1, "yes"):
        strict = raw.post("/v1/chat/completions", {**CHAT, "stream": value})
        assert strict.status == 400
        lenient = raw.post(
            "/v1/chat/completions", {**CHAT, "stream": value}, x_sim_compat="lenient-stream"
        )
        assert lenient.headers["content-type"].startswith("text/event-stream")
    zero = raw.post("/v1/chat/completions", {**CHAT, "stream": 0}, x_sim_compat="lenient-stream")
    assert zero.headers["content-type"].startswith("application/json")
    for path in ("/v1/responses", "/v1/messages"):
        answer = raw.post(path, {**BODIES[path], "stream": "true"}, x_sim_compat="lenient-stream")
        assert answer.headers["content-type"].startswith("text/event-stream")


def test_max_tokens_only(raw: Raw) -> None:
    body = {**CHAT, "max_completion_tokens": 5, "max_tokens": 10}
    strict = raw.post("/v1/chat/completions", body, x_sim_output_tokens="50")
    assert strict.json()["usage"]["completion_tokens"] == 5
    lax = raw.post(
        "/v1/chat/completions", body, x_sim_output_tokens="50", x_sim_compat="max-tokens-only"
    )
    assert lax.json()["usage"]["completion_tokens"] == 10
    ignored = {**CHAT, "max_completion_tokens": 0}
    unlimited = raw.post(
        "/v1/chat/completions", ignored, x_sim_output_tokens="50", x_sim_compat="max-tokens-only"
    )
    assert unlimited.json()["usage"]["completion_tokens"] == 50


def test_max_completion_or_max(raw: Raw) -> None:
    body = {**CHAT, "max_completion_tokens": 0, "max_tokens": 7}
    assert raw.post("/v1/chat/completions", body).status == 400
    headers = {"x_sim_output_tokens": "50", "x_sim_compat": "max-completion-or-max"}
    lax = raw.post("/v1/chat/completions", body, **headers)
    assert lax.json()["usage"]["completion_tokens"] == 7
    assert lax.json()["choices"][0]["finish_reason"] == "length"
    no_cap = raw.post("/v1/chat/completions", {**CHAT, "max_completion_tokens": 0}, **headers)
    assert no_cap.json()["usage"]["completion_tokens"] == 50
    negative = raw.post("/v1/chat/completions", {**CHAT, "max_completion_tokens": -1}, **headers)
    assert negative.status == 400


def test_records_expose_billing(sim: SimulatorThread, raw: Raw) -> None:
    search = {"type": "web_search_20250305", "name": "web_search"}
    raw.post(
        "/v1/messages",
        {**CLAUDE, "tools": [search]},
        x_sim_cached_tokens="1000",
        x_sim_cache_write_tokens="24",
        x_sim_service_tier="priority",
    )
    listing = raw.send("GET", "/_sim/records").json()
    billed = listing[-1]["billed"]
    record = sim.records[-1]
    assert billed == record.billed
    assert billed["cached_input_tokens"] == 1000
    assert billed["cache_write_input_tokens"] == 24
    assert billed["tool_result_tokens"] == 10_000
    assert billed["input_tokens"] >= 1000 + 24 + 10_000
    assert billed["server_tool_uses"] == {"web_search": 1}
    assert billed["service_tier"] == "priority"
    assert billed["output_tokens"] == record.output_tokens > 0
    assert listing[-1]["response_id"] == record.response_id
    assert raw.send("POST", "/_sim/reset").status == 200
    assert sim.records == []
