"""Bounded memory for streams that do not end: a provider that keeps generating (here 80 MB
of text, far past the request's ceiling, to a caller no budget applies to) grows the
gateway's memory by what the stream meter keeps (at most ~1 MiB of text; the rest is
folded into counts), not by what was generated, and the row it leaves still charges the
estimated output of everything generated. An event that never ends is bounded by
``server.max_upstream_event_bytes``: the stream ends as an upstream error and is charged.

Memory is read from ``/proc/<pid>/status`` of a gateway in a process of its own: its peak
(VmHWM) after the stream against its resident size (VmRSS) before."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import orjson
from aiohttp import web

from e2e.process import GatewayProcess, create_key, read_ledger, write_config

TEXT_BYTES = 80 * 1024 * 1024  # generated in all
GROWTH_LIMIT_KB = 50 * 1024


def memory_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


class FakeUpstream:
    """A provider on loopback whose chat stream is what ``handler`` writes (a thread of
    its own, like the simulator's)."""

    def __init__(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        self.runner = web.AppRunner(app)
        self.url = ""

    def __enter__(self) -> FakeUpstream:
        self.thread.start()

        async def start() -> str:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return f"http://127.0.0.1:{self.runner.addresses[0][1]}"

        self.url = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def chunk(delta: dict[str, Any], finish: str | None = None, usage: Any = None) -> bytes:
    event = {
        "id": "chatcmpl-endless",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
        "usage": usage,
    }
    return b"data: " + orjson.dumps(event) + b"\n\n"


async def endless_answer(request: web.Request) -> web.StreamResponse:
    """80 MB of text (or ``x-text-bytes``) in 4 KB deltas, far past any ceiling, then an
    honest end."""
    size = int(request.headers.get("x-text-bytes", TEXT_BYTES))
    reply = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await reply.prepare(request)
    await reply.write(chunk({"role": "assistant", "content": ""}))
    piece = ("word " * 820)[:4096]
    for _ in range(size // len(piece)):
        await reply.write(chunk({"content": piece}))
    await reply.write(chunk({}, finish="length"))
    tokens = size // 5
    usage = {"prompt_tokens": 9, "completion_tokens": tokens, "total_tokens": tokens + 9}
    await reply.write(chunk({}, usage=usage) + b"data: [DONE]\n\n")
    return reply


def test_an_endless_stream_keeps_gateway_memory_bounded(tmp_path: Path) -> None:
    with FakeUpstream(endless_answer) as upstream:
        config = write_config(tmp_path, upstream.url)
        key = create_key(config, "--name", "endless", "--user", "eve")["key"]
        with GatewayProcess(config) as gateway:
            headers = {"authorization": f"Bearer {key}"}
            body = {
                "model": "gpt-4o-mini",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "go on forever"}],
            }
            with httpx2.Client(timeout=300) as http:
                # warm-up: a 3 MB answer loads what any long stream needs (the tokenizer
                # that counts what is folded away), so that "before" includes it
                warm = {**headers, "x-text-bytes": str(3 * 1024 * 1024)}
                url = gateway.url + "/v1/chat/completions"
                assert http.post(url, json=body, headers=warm).status_code == 200
                before = memory_kb(gateway.pid, "VmRSS")
                received = 0
                with http.stream("POST", url, json=body, headers=headers) as reply:
                    assert reply.status_code == 200
                    for data in reply.iter_bytes():
                        received += len(data)
                peak = memory_kb(gateway.pid, "VmHWM")
            assert gateway.stop() == 0
        rows = [row for row in read_ledger(tmp_path / "spendgate.db") if row.blocked_by is None]
    assert len(rows) == 2
    assert received > TEXT_BYTES  # the whole endless answer went through
    growth = peak - before
    print(f"\ngateway memory: {before} kB before, peak {peak} kB (+{growth} kB)")
    assert growth < GROWTH_LIMIT_KB, growth
    # charged, and flagged: the provider wrote far past the ceiling
    assert all(row.usage_problem is not None for row in rows)


async def endless_event(request: web.Request) -> web.StreamResponse:
    """One SSE event that never ends (no blank line, 1 MB a chunk, 64 MB in all)."""
    reply = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await reply.prepare(request)
    await reply.write(b'data: {"id":"x","object":"chat.completion.chunk","choices":[')
    filler = b" " * (1024 * 1024)
    for _ in range(64):
        await reply.write(filler)
    return reply


def test_an_event_past_the_bound_ends_the_stream_as_an_upstream_error(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["server"]["max_upstream_event_bytes"] = 4 * 1024 * 1024

    with FakeUpstream(endless_event) as upstream:
        config = write_config(tmp_path, upstream.url, configure=configure)
        key = create_key(config, "--name", "big-event", "--user", "eve")["key"]
        with GatewayProcess(config) as gateway:
            body = {
                "model": "gpt-4o-mini",
                "max_tokens": 50,
                "stream": True,
                "messages": [{"role": "user", "content": "one huge event"}],
            }
            headers = {"authorization": f"Bearer {key}"}
            with (
                httpx2.Client(timeout=120) as http,
                http.stream(
                    "POST", gateway.url + "/v1/chat/completions", json=body, headers=headers
                ) as reply,
            ):
                assert reply.status_code == 200
                tail = b"".join(reply.iter_bytes())
            assert gateway.stop() == 0
    error = orjson.loads(tail.split(b"data: ")[-1])["error"]
    assert "server.max_upstream_event_bytes" in error["message"]
    [row] = [r for r in read_ledger(tmp_path / "spendgate.db") if r.blocked_by is None]
    assert row.error is not None
    assert "max_upstream_event_bytes" in row.error
