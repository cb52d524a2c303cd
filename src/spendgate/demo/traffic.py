"""Synthetic traffic over real HTTP: every member of the cast runs its sessions against the
gateway, in the wire format of the client it imitates (Claude Code, Codex, SDK scripts).

Requests carry ``x-sim-*`` headers (see `spendgate.simulator.faults`) that tell the simulated
provider how long to think, how fast to stream, how much to write and how much of the prompt
its cache holds. The gateway passes them through like any other header.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from spendgate.demo.scenario import Api, CallSpec, Person

SYSTEM_PROMPT = "You are a careful senior engineer. Answer with code and short explanations."
ANTHROPIC_VERSION = "2023-06-01"
CHARS_PER_TOKEN = 4  # the simulator counts ceil(len(text) / 4) tokens
CHUNK_DELAY_MS = (10, 25)
FIRST_BYTE_MS = {
    "claude-opus-4-1": (600, 1_400),
    "claude-sonnet-4-6": (350, 900),
    "claude-haiku-4-5": (200, 500),
    "gpt-4o": (300, 800),
    "gpt-4.1-mini": (200, 500),
    "gpt-4o-mini": (150, 400),
    "text-embedding-3-small": (40, 120),
}
EMBEDDING_BATCH = 8


@functools.cache
def _corpus() -> str:
    """Code-like filler to build prompts from: ~60k tokens, built once."""
    lines = (
        f"{i:05d}    def handle_{i}(request):  return cache.get(request.id) or compute(request)\n"
        for i in range(3_000)
    )
    return "".join(lines)


def filler(rng: random.Random, tokens: int) -> str:
    """About ``tokens`` tokens of text, from a random place in the corpus."""
    corpus = _corpus()
    size = max(1, tokens) * CHARS_PER_TOKEN
    while len(corpus) < size:
        corpus += corpus
    start = rng.randrange(len(corpus) - size + 1)
    return corpus[start : start + size]


@dataclass(frozen=True, slots=True)
class Request:
    path: str
    headers: dict[str, str]
    body: bytes


def _pacing(call: CallSpec, rng: random.Random, speed: float) -> dict[str, str]:
    low, high = FIRST_BYTE_MS.get(call.model, (200, 600))
    return {
        "x-sim-delay-ms": str(round(rng.uniform(low, high) / speed)),
        "x-sim-chunk-delay-ms": str(round(rng.uniform(*CHUNK_DELAY_MS) / speed, 1)),
    }


def _usage_headers(call: CallSpec, prompt: int, output: int) -> dict[str, str]:
    headers = {"x-sim-output-tokens": str(output)}
    cached = int(prompt * call.cached)
    if cached:
        headers["x-sim-cached-tokens"] = str(cached)
        if call.api is Api.MESSAGES:  # Claude Code marks the new turn for caching too
            headers["x-sim-cache-write-tokens"] = str(min(prompt - cached, prompt // 20))
    return headers


def _body(call: CallSpec, text: str, output: int, session: str) -> dict[str, Any]:
    if call.api is Api.CHAT:
        return {
            "model": call.model,
            "messages": [
                {"role": "system", "content": SYSTEM_PROMPT},
                {"role": "user", "content": text},
            ],
            "max_completion_tokens": output * 2,
            "stream": call.stream,
        }
    if call.api is Api.RESPONSES:  # what Codex sends: no output cap, a prompt cache key
        return {
            "model": call.model,
            "instructions": SYSTEM_PROMPT,
            "input": [{"role": "user", "content": [{"type": "input_text", "text": text}]}],
            "stream": call.stream,
            "store": False,
            "prompt_cache_key": session,
        }
    if call.api is Api.MESSAGES:
        return {
            "model": call.model,
            "max_tokens": 32_000 if call.stream else 4_096,
            "system": [
                {"type": "text", "text": SYSTEM_PROMPT, "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [{"role": "user", "content": text}],
            "stream": call.stream,
        }
    step = max(1, len(text) // EMBEDDING_BATCH)
    return {
        "model": call.model,
        "input": [text[i : i + step] for i in range(0, len(text), step)],
        "encoding_format": "base64",
        "dimensions": 256,
    }


def _auth(call: CallSpec, secret: str) -> dict[str, str]:
    if call.api is not Api.MESSAGES:
        return {"authorization": f"Bearer {secret}"}
    # Claude Code sends ANTHROPIC_AUTH_TOKEN as a bearer token; SDK scripts use x-api-key.
    auth = {"authorization": f"Bearer {secret}"} if call.stream else {"x-api-key": secret}
    return {**auth, "anthropic-version": ANTHROPIC_VERSION}


def build_request(
    call: CallSpec, secret: str, rng: random.Random, *, speed: float = 1.0, session: str = ""
) -> Request:
    prompt = rng.randint(*call.prompt)
    output = rng.randint(*call.output)
    headers = {
        "content-type": "application/json",
        **_auth(call, secret),
        **_pacing(call, rng, speed),
        **_usage_headers(call, prompt, output),
    }
    body = orjson.dumps(_body(call, filler(rng, prompt), output, session))
    return Request(call.api.value, headers, body)


# ---------------------------------------------------------------------------- runner


@dataclass(slots=True)
class TrafficStats:
    sent: int = 0
    failed: int = 0  # answered with an error status, or no answer at all
    last_failure: str | None = None
    in_flight: int = 0
    cut: int = 0  # calls in flight when `abort` cancelled them


@dataclass(slots=True)
class Traffic:
    """Runs every session of the cast until `stop_sending`, then lets calls in flight end."""

    base_url: str
    cast: Sequence[tuple[Person, str]]
    speed: float = 1.0
    seed: int = 7
    stats: TrafficStats = field(default_factory=TrafficStats)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0),
            timeout=aiohttp.ClientTimeout(total=120),
        )
        number = 0
        for person, secret in self.cast:
            for session in range(person.workload.sessions):
                number += 1
                rng = random.Random(self.seed * 1_000 + number)
                name = f"{person.key_name}/{session}"
                self._tasks.append(asyncio.create_task(self._session(person, secret, rng, name)))

    def stop_sending(self) -> None:
        self._stop.set()

    async def drain(self, timeout_s: float) -> None:
        """Stop sending; wait for the calls in flight (at most ``timeout_s``), then cancel."""
        self.stop_sending()
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout_s)
            if pending:
                await self.abort()

    async def abort(self) -> None:
        """Cancel every session now: calls in flight are cut, as a client would on Ctrl-C."""
        self.stop_sending()
        self.stats.cut += self.stats.in_flight
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def close(self) -> None:
        await self.abort()
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _session(self, person: Person, secret: str, rng: random.Random, name: str) -> None:
        workload = person.workload
        weights = [call.weight for call in workload.calls]
        await self._pause(rng.uniform(0, workload.pause_s) / self.speed)
        while not self._stop.is_set():
            call = rng.choices(workload.calls, weights)[0]
            await self._send(build_request(call, secret, rng, speed=self.speed, session=name))
            await self._pause(rng.expovariate(1 / workload.pause_s) / self.speed)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _send(self, request: Request) -> None:
        assert self._http is not None, "start() first"
        url = self.base_url + request.path
        self.stats.in_flight += 1
        try:
            async with self._http.post(url, data=request.body, headers=request.headers) as reply:
                await reply.read()  # a stream is read to its end, as an SDK would
                status = reply.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            self._failed(f"{request.path}: {type(exc).__name__}")
            return
        finally:
            self.stats.in_flight -= 1
        self.stats.sent += 1
        if status >= 400:
            self._failed(f"{request.path}: HTTP {status}")

    def _failed(self, what: str) -> None:
        self.stats.failed += 1
        self.stats.last_failure = what
