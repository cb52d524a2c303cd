"""A fake OpenAI upstream as cheap as Python allows, for throughput benchmarks.

    python -m benchmarks.fake_upstream --port 8000

An asyncio ``Protocol`` on uvloop that answers every request with one fixed, faithful
non-streaming chat completion (the simulator's shape: ``id``, ``choices``, ``usage`` with
its details, ``x-request-id``), keep-alive, nothing parsed but the request line's end, the
headers' end and ``Content-Length``. The simulator (``spendgate.simulator``) validates each
body, counts tokens and generates text: right for correctness, but on a 2-core machine its
CPU per request is a large share of what the gateway itself costs, so a throughput figure
taken against it measures the simulator as much as the gateway. This one costs a few tens
of microseconds a request (the benchmark reports its CPU per request beside the others).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
from typing import Any

import orjson

CONTENT = "Hello there, how are you doing today friend"
USAGE = {
    "prompt_tokens": 13,
    "completion_tokens": 9,
    "total_tokens": 22,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
IDS = itertools.count(1)


def answer(number: int) -> bytes:
    body = orjson.dumps(
        {
            "id": f"chatcmpl-fake{number:012d}",
            "object": "chat.completion",
            "created": 1796600000,
            "model": "gpt-4o-mini-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": CONTENT, "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": USAGE,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
        }
    )
    head = (
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
        f"x-request-id: req_fake{number:012d}\r\ncontent-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class Upstream(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.transport: Any = None  # uvloop's transport is not an asyncio.Transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            length = 0
            marker = self.buffer.lower().find(b"content-length:", 0, end)
            if marker >= 0:
                stop = self.buffer.find(b"\r\n", marker)
                length = int(self.buffer[marker + 15 : stop])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.transport.write(answer(next(IDS)))


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Upstream, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.run(serve(args.port))
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        asyncio.run(serve(args.port))


if __name__ == "__main__":
    main()
