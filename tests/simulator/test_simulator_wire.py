"""Exact bytes on the wire, the control surface, and the pieces behind them."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from multidict import CIMultiDict

from spendgate.simulator import Simulator, SimulatorOptions, parse_faults
from spendgate.simulator.streaming import reframe
from spendgate.simulator.tokens import (
    IMAGE_TOKENS,
    chat_input_tokens,
    generate_text,
    plan_output,
    text_tokens,
    value_tokens,
)

AUTH = {"authorization": "Bearer sk-upstream"}
CHAT: dict[str, Any] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
CLAUDE: dict[str, Any] = {**CHAT, "model": "claude-sonnet-4-6", "max_tokens": 100}


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    async with Simulator() as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession, url: str, body: object, **headers: str
) -> tuple[int, Mapping[str, str], bytes]:
    all_headers = {**AUTH, **{k.replace("_", "-"): v for k, v in headers.items()}}
    async with http.post(url, data=orjson.dumps(body), headers=all_headers) as response:
        return response.status, CIMultiDict(response.headers), await response.read()


def sse_blocks(raw: bytes) -> list[list[str]]:
    return [block.split("\n") for block in raw.decode().split("\n\n") if block]


async def test_chat_stream_bytes(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    status, headers, raw = await post(http, sim.url + "/v1/chat/completions", body)
    assert status == 200
    assert headers["Content-Type"].startswith("text/event-stream")
    assert headers["x-request-id"].startswith("req_")
    blocks = sse_blocks(raw)
    assert all(len(block) == 1 and block[0].startswith("data: ") for block in blocks)
    assert blocks[-1] == ["data: [DONE]"]
    chunks = [orjson.loads(block[0][6:]) for block in blocks[:-1]]
    assert all("usage" in chunk for chunk in chunks)
    assert all(chunk["usage"] is None for chunk in chunks[:-1])
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    assert chunks[-2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[-1]["choices"] == []
    usage = chunks[-1]["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    plain = await post(http, sim.url + "/v1/chat/completions", {**CHAT, "stream": True})
    assert b'"usage"' not in plain[2]


async def test_anthropic_stream_bytes(sim: Simulator, http: aiohttp.ClientSession) -> None:
    status, headers, raw = await post(http, sim.url + "/v1/messages", {**CLAUDE, "stream": True})
    assert status == 200
    assert headers["request-id"].startswith("req_")
    blocks = sse_blocks(raw)
    names = [block[0].removeprefix("event: ") for block in blocks]
    datas = [orjson.loads(block[1].removeprefix("data: ")) for block in blocks]
    assert all(data["type"] == name for name, data in zip(names, datas, strict=True))
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    start_usage = datas[0]["message"]["usage"]
    assert start_usage["output_tokens"] == 1
    assert {"input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"} <= set(
        start_usage
    )
    delta = datas[-2]
    assert delta["delta"] == {"stop_reason": "end_turn", "stop_sequence": None}
    assert delta["usage"] == {"output_tokens": sim.records[-1].output_tokens}


async def test_anthropic_delta_full_usage(http: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorOptions(anthropic_delta_full_usage=True)) as sim:
        _, _, raw = await post(http, sim.url + "/v1/messages", {**CLAUDE, "stream": True})
    delta = orjson.loads(sse_blocks(raw)[-2][1].removeprefix("data: "))
    assert set(delta["usage"]) == {
        "output_tokens",
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    }


async def test_no_usage_anthropic_stream(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {**CLAUDE, "stream": True}
    _, _, raw = await post(http, sim.url + "/v1/messages", body, x_sim_no_usage="1")
    assert b"usage" not in raw
    assert sim.records[-1].usage_reported is None


async def test_request_validation(sim: Simulator, http: aiohttp.ClientSession) -> None:
    no_max = {k: v for k, v in CLAUDE.items() if k != "max_tokens"}
    status, _, raw = await post(http, sim.url + "/v1/messages", no_max)
    assert status == 400
    error = orjson.loads(raw)
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in error["error"]["message"]
    assert error["request_id"] == sim.records[-1].request_id
    async with http.post(sim.url + "/v1/chat/completions", data=b"{nope", headers=AUTH) as bad:
        assert bad.status == 400
        assert (await bad.json())["error"]["type"] == "invalid_request_error"
    status, _, _ = await post(http, sim.url + "/v1/chat/completions", {**CHAT, "n": 0})
    assert status == 400
    status, _, _ = await post(http, sim.url + "/v1/embeddings", {"model": "e", "input": []})
    assert status == 400


async def test_routes(sim: Simulator, http: aiohttp.ClientSession) -> None:
    status, _, raw = await post(http, sim.url + "/v1/messages?beta=true", CLAUDE)
    assert status == 200
    assert sim.records[-1].query == "beta=true"
    status, _, raw = await post(http, sim.url + "/v1/nothing", {})
    assert status == 404
    assert set(orjson.loads(raw)["error"]) == {"message", "type", "param", "code"}
    status, _, raw = await post(http, sim.url + "/v1/messages/nothing", {})
    assert orjson.loads(raw)["error"]["type"] == "not_found_error"
    async with http.get(sim.url + "/v1/responses", headers=AUTH) as upgrade:
        assert upgrade.status == 426
    anthropic_headers = {**AUTH, "anthropic-version": "2023-06-01"}
    async with http.get(sim.url + "/v1/models", headers=anthropic_headers) as listing:
        models = await listing.json()
    assert models["has_more"] is False
    assert all(model["type"] == "model" for model in models["data"])


async def test_control_surface(sim: Simulator, http: aiohttp.ClientSession) -> None:
    await post(http, sim.url + "/v1/chat/completions", CHAT)
    async with http.get(sim.url + "/_sim/records") as listing:
        records = await listing.json()
    assert len(records) == 1
    record = records[0]
    assert record["path"] == "/v1/chat/completions"
    assert record["headers"]["authorization"] == "Bearer sk-upstream"
    assert record["body"] == CHAT
    assert orjson.loads(record["raw_body"]) == CHAT
    assert record["completed"] is True
    assert record["usage_reported"]["completion_tokens"] == record["output_tokens"]
    async with http.post(sim.url + "/_sim/reset") as reset:
        assert reset.status == 200
    assert sim.records == []


async def test_disconnect_marks_record(sim: Simulator, http: aiohttp.ClientSession) -> None:
    body = {**CHAT, "stream": True}
    headers = {**AUTH, "x-sim-chunk-delay-ms": "10", "x-sim-output-tokens": "500"}
    async with http.post(sim.url + "/v1/chat/completions", json=body, headers=headers) as resp:
        await resp.content.readuntil(b"\n\n")
        await resp.content.readuntil(b"\n\n")
        resp.close()
    assert await sim.wait_idle(2.0)
    record = sim.records[-1]
    assert (record.outcome, record.completed) == ("disconnected", False)
    assert 2 <= record.chunks_sent < 60  # of ~170 events


async def test_records_are_trimmed(http: aiohttp.ClientSession) -> None:
    async with Simulator(SimulatorOptions(max_records=10)) as sim:
        for _ in range(12):
            await post(http, sim.url + "/v1/chat/completions", CHAT)
        assert 0 < len(sim.records) <= 10
        sim.clear()
        assert sim.records == []
    async with Simulator(SimulatorOptions(record_requests=False)) as sim:
        await post(http, sim.url + "/v1/chat/completions", CHAT)
        assert sim.records == []


async def test_urls(sim: Simulator) -> None:
    assert sim.url == f"http://127.0.0.1:{sim.port}"
    assert sim.openai_base_url == sim.url + "/v1"
    assert sim.anthropic_base_url == sim.url
    assert sim.port > 0


def test_token_rules() -> None:
    assert text_tokens("") == 0
    assert text_tokens("abcd") == 1
    assert text_tokens("abcde") == 2
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 9999}}
    assert value_tokens(image) == IMAGE_TOKENS
    assert value_tokens({"type": "text", "text": "abcd", "cache_control": {"type": "x"}}) == 1
    body = {"messages": [{"role": "user", "content": "abcd"}]}
    assert chat_input_tokens(body) == 4 + 1 + 3
    assert generate_text(7, 5) == generate_text(7, 5)
    assert len(generate_text(7, 5)) == 5
    assert not generate_text(7, 1)[0].startswith(" ")


def test_output_plan() -> None:
    none = parse_faults({})
    plan = plan_output(seed=41, limit=None, faults=none, low=20, high=60)
    assert 20 <= plan.total <= 60
    assert not plan.truncated
    capped = plan_output(seed=41, limit=3, faults=none, low=20, high=60)
    assert (capped.total, capped.truncated) == (3, True)
    faults = parse_faults({"x-sim-output-tokens": "10", "x-sim-reasoning-tokens": "4"})
    split = plan_output(seed=1, limit=None, faults=faults, low=20, high=60)
    assert (split.text, split.reasoning) == (6, 4)


def test_parse_faults() -> None:
    faults = parse_faults({"x-sim-status": "429", "x-sim-die-after-chunks": "oops"})
    assert faults == parse_faults({"x-sim-status": "429"})
    assert faults.status == 429
    assert faults.die_after_chunks is None
    assert parse_faults({"x-sim-ignore-max": "true"}).ignore_max
    assert parse_faults({"content-type": "x"}) is parse_faults({})


def test_reframe_is_odd_but_means_the_same() -> None:
    event = b'event: message_delta\ndata: {"type":"message_delta","usage":{}}\n\n'
    modes = parse_faults({"x-sim-framing": "crlf,nospace,comments,multiline,x"}).framing
    assert modes == {"crlf", "nospace", "comments", "multiline"}
    assert reframe(event, modes) == (
        b": keep-alive\r\n\r\nevent:message_delta\r\n: a comment inside the event\r\n"
        b'data:{"type":"message_delta",\r\ndata:"usage":{}}\r\n\r\n'
    )
    assert reframe(event, frozenset()) == event


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a parent that ignores it passes on


@pytest.mark.parametrize("inherited", ["default", "ignored"])
async def test_module_entry_point(http: aiohttp.ClientSession, inherited: str) -> None:
    port = _free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "spendgate.simulator", "--port", str(port), "--no-auth"]
    before = _ignore_sigint if inherited == "ignored" else None
    process = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, preexec_fn=before)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/v1/models") as response:
                    assert response.status == 200
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        status = Path(f"/proc/{process.pid}/status").read_text()
        signals = [line for line in status.splitlines() if line.startswith(("SigBlk", "SigIgn"))]
        process.send_signal(signal.SIGINT)
        # it exits at once, even when the test process ignores or blocks SIGINT (which a
        # child inherits through exec): it restores the handler itself
        assert process.wait(timeout=10) == 0, signals
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        output = process.stdout.read().decode()
        process.stdout.close()
    assert f"http://127.0.0.1:{port}" in output
