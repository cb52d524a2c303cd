"""The requests of the demo's cast, in the wire format of the client each imitates: Claude
Code (streamed Anthropic Messages, a bearer token, ``max_tokens: 32000``, a session header),
Codex (streamed Responses, no output cap, a ``session-id``), SDK scripts and notebooks.

Requests carry ``x-sim-*`` headers (see `spendgate.simulator.faults`) that tell the simulated
provider how long to think, how fast to stream, how much to write and how much of the prompt
its cache holds. The gateway passes them through like any other header. Pure: no IO.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from typing import Any

import orjson

from spendgate.demo.scenario import Api, CallSpec

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


def _session(call: CallSpec, session: str) -> dict[str, str]:
    """The session header each coding agent sends (spendgate records it in the ledger)."""
    if not session or not call.stream:
        return {}
    if call.api is Api.MESSAGES:
        return {"x-claude-code-session-id": session}
    if call.api is Api.RESPONSES:
        return {"session-id": session}
    return {}


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
        **_session(call, session),
    }
    body = orjson.dumps(_body(call, filler(rng, prompt), output, session))
    return Request(call.api.value, headers, body)


def retried(request: Request, attempt: int) -> Request:
    """The same request sent again, numbered as the official SDKs number their retries."""
    headers = {**request.headers, "x-stainless-retry-count": str(attempt)}
    return Request(request.path, headers, request.body)
