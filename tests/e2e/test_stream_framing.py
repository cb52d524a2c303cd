"""Odd but valid upstream SSE framing (``x-sim-framing``: CRLF line endings, ``data:``
without its space, ``: keep-alive`` comments between and inside events, JSON over two
``data:`` lines, every byte its own TCP write) through the relay: each dialect's client
reads the same answer as from a plainly framed stream, and the ledger row is the same,
exact (the provider's usage, believed, no error)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import orjson
import pytest

from harness import GatewayHarness, with_gemini
from spendgate.domain.ledger import LedgerRow

ODD = "crlf,nospace,comments,multiline,bytewise"
PROMPT = "Write about careful gateways."
GEMINI = "gemini-2.5-flash"


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("framing") / "spendgate.db",
        configure=lambda data: with_gemini(data, GEMINI),
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def _sse(raw: bytes) -> list[tuple[str | None, Any]]:
    """Events as the SSE spec reads them: (event name, JSON data)."""
    events = []
    for block in raw.replace(b"\r\n", b"\n").split(b"\n\n"):
        name, data = None, []
        for line in block.split(b"\n"):
            field, _, value = line.partition(b":")
            value = value[1:] if value.startswith(b" ") else value
            if field == b"event":
                name = value.decode()
            elif field == b"data":
                data.append(value)
        if data:
            events.append((name, orjson.loads(b"\n".join(data))))
    return events


def _chat(gw: GatewayHarness, secret: str, headers: dict[str, str]) -> Any:
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": PROMPT}],
                stream=True,
                stream_options={"include_usage": True},
                extra_headers=headers,
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks[-1].usage.model_dump()


def _responses(gw: GatewayHarness, secret: str, headers: dict[str, str]) -> Any:
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        events = list(
            client.responses.create(
                model="gpt-4o-mini", input=PROMPT, stream=True, extra_headers=headers
            )
        )
    final = events[-1].response  # type: ignore[union-attr]
    return final.output_text, final.status, final.usage.model_dump()


def _messages(gw: GatewayHarness, secret: str, headers: dict[str, str]) -> Any:
    with (
        gw.sdk_client("anthropic", secret, max_retries=0) as client,
        client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=200,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers=headers,
        ) as stream,
    ):
        message = stream.get_final_message()
    return message.content[0].text, message.stop_reason, message.usage.model_dump()  # type: ignore[union-attr]


def _gemini(gw: GatewayHarness, secret: str, headers: dict[str, str]) -> Any:
    response = httpx2.post(
        f"{gw.url}/v1beta/models/{GEMINI}:streamGenerateContent?alt=sse",
        headers={"x-goog-api-key": secret, **headers},
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )
    chunks = [data for _, data in _sse(response.content)]
    text = "".join(c["candidates"][0]["content"]["parts"][0]["text"] for c in chunks)
    return text, chunks[-1]["candidates"][0]["finishReason"], chunks[-1]["usageMetadata"]


def test_a_last_event_without_its_blank_line_is_read(gw: GatewayHarness) -> None:
    """A stream that closes right after its last event's line break, before the blank line
    (Vertex streams were seen to): google-genai still reads that event (it flushes at the
    end), so the relay does too: the client gets the finishing chunk, and the row is the
    provider's usage, not an estimate with an error added to the stream."""
    answers = []
    for framing in ("", "unterminated", "unterminated,crlf,bytewise"):
        secret = gw.create_key(user=f"unterminated-{framing}")
        answers.append(_gemini(gw, secret, {"x-sim-output-tokens": "40", "x-sim-framing": framing}))
        (row,) = gw.ledger(gw.last_key_id)
        assert (row.error, row.usage_estimated, row.output_tokens) == (None, False, 40)
    assert answers[1] == answers[2] == answers[0]
    assert answers[0][1] == "STOP"


def _gemini_array(gw: GatewayHarness, secret: str, headers: dict[str, str]) -> Any:
    response = httpx2.post(
        f"{gw.url}/v1beta/models/{GEMINI}:streamGenerateContent",
        headers={"x-goog-api-key": secret, **headers},
        json={"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]},
    )
    chunks = orjson.loads(response.content)
    return [{k: v for k, v in chunk.items() if k != "responseId"} for chunk in chunks]


@pytest.mark.parametrize(
    "ask",
    [_chat, _responses, _messages, _gemini, _gemini_array],
    ids=["chat", "responses", "messages", "gemini", "gemini-array"],
)
def test_odd_framing_reads_and_bills_as_plain_framing(
    gw: GatewayHarness, ask: Callable[[GatewayHarness, str, dict[str, str]], Any]
) -> None:
    answers: list[Any] = []
    rows: list[LedgerRow] = []
    for framing in ("", ODD):
        secret = gw.create_key(user=f"framing-{framing}")
        answers.append(ask(gw, secret, {"x-sim-output-tokens": "40", "x-sim-framing": framing}))
        (row,) = gw.ledger(gw.last_key_id)
        record = gw.sim.records[-1]
        assert (row.error, row.usage_estimated) == (None, False)
        assert (row.input_tokens, row.output_tokens) == (record.input_tokens, 40)
        rows.append(row)
    assert answers[1] == answers[0]
    assert answers[0][0]
    assert rows[1].cost_nanos == rows[0].cost_nanos
