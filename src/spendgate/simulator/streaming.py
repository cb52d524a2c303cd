"""Writing SSE streams, with chunk pacing, injected cuts and disconnect detection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any, NamedTuple

from aiohttp import web

from . import records, wire

if TYPE_CHECKING:
    from collections.abc import Callable

    from .context import Call


class Event(NamedTuple):
    """One SSE event: its bytes, the output tokens it carries, the usage it reports."""

    data: bytes
    tokens: int = 0
    usage: dict[str, Any] | None = None


Events = Iterable[Event] | AsyncIterable[Event]


class _ClientGone(Exception):
    pass


async def _write_reframed(
    call: Call, response: web.StreamResponse, data: bytes, modes: frozenset[str]
) -> None:
    """One event's bytes, byte by byte for ``bytewise`` (counted as one event)."""
    if "bytewise" not in modes:
        await _write(call, response, data)
        return
    for index in range(len(data)):
        await response.write(data[index : index + 1])
        await asyncio.sleep(0)  # each byte its own write on the wire
    call.record.chunks_sent += 1


def abort_connection(call: Call) -> None:
    """Drop the TCP connection at once, without finishing the HTTP response."""
    transport = call.request.transport
    if transport is not None:
        transport.abort()
    call.record.finish(records.DIED)


async def _write(call: Call, response: web.StreamResponse, data: bytes) -> None:
    transport = call.request.transport
    if transport is None or transport.is_closing():
        raise _ClientGone
    try:
        await response.write(data)
    except ConnectionError as exc:
        raise _ClientGone from exc
    call.record.chunks_sent += 1


def reframe(event: bytes, modes: frozenset[str]) -> bytes:
    """One SSE event (``x-sim-framing``) in odd but valid framing, meaning the same to a
    client that reads SSE as the spec says."""
    lines = event.replace(b"\r\n", b"\n").rstrip(b"\n").split(b"\n")
    if "multiline" in modes:
        lines = [part for line in lines for part in _split_data(line)]
    if "nospace" in modes:
        lines = [
            line.replace(b": ", b":", 1) if not line.startswith(b":") else line for line in lines
        ]
    if "comments" in modes:
        lines = [b": keep-alive", b"", *lines[:1], b": a comment inside the event", *lines[1:]]
    out = b"\n".join(lines) + b"\n\n"
    return out.replace(b"\n", b"\r\n") if "crlf" in modes else out


def _split_data(line: bytes) -> list[bytes]:
    cut = line.find(b',"')
    if not line.startswith(b"data: ") or cut < 0:
        return [line]
    return [line[: cut + 1], b"data: " + line[cut + 1 :]]


async def _each(events: Events) -> AsyncIterator[Event]:
    if isinstance(events, AsyncIterable):
        async for event in events:
            yield event
    else:
        for event in events:
            yield event


async def _send_all(
    call: Call,
    response: web.StreamResponse,
    events: Events,
    error_event: Callable[[int], bytes],
    paced: bool,
    sse: bool,
) -> bool:
    """Send the events; False when the stream was cut on purpose (die/error)."""
    faults, record = call.faults, call.record
    delay = call.chunk_delay_s if paced else 0.0
    modes = faults.framing if sse else faults.framing & {"bytewise"}  # (a JSON array)
    carry = b""  # (unterminated) the blank line that ends the event before, sent with the next
    async for event in _each(events):
        if delay and record.chunks_sent:
            await asyncio.sleep(delay)
        if record.chunks_sent == faults.die_after_chunks:
            abort_connection(call)
            return False
        if record.chunks_sent == faults.error_after_chunks:
            await _write(call, response, carry + error_event(record.chunks_sent))
            await response.write_eof()
            record.finish(records.ERROR)
            return False
        if modes:
            data = reframe(event.data, modes) if sse else event.data
            if "unterminated" in modes:
                body = data.rstrip(b"\r\n")
                data, carry = carry + body, data[len(body) :]
            await _write_reframed(call, response, data, modes)
        else:
            await _write(call, response, event.data)
        record.output_tokens_sent += event.tokens
        if event.usage is not None:
            record.usage_reported = event.usage
    if carry:  # the last event ends with its line break, without the blank line
        await response.write(carry[: len(carry) // 2])
    if record.chunks_sent == faults.die_after_chunks:
        abort_connection(call)
        return False
    return True


async def stream_events(
    call: Call,
    events: Events,
    error_event: Callable[[int], bytes],
    paced: bool = True,
    content_type: str = wire.SSE_TYPE,
) -> web.StreamResponse:
    """Answer with an SSE stream of ``events``.

    ``error_event(n)`` builds the dialect's mid-stream error after ``n`` events; it is
    sent instead of the rest when ``x-sim-error-after-chunks`` is ``n``. ``paced``: wait
    the chunk delay between events (False when the source paces itself). ``content_type``:
    another framing of a streamed answer (Gemini's JSON array without ``alt=sse``)."""
    call.record.stream = True
    response = web.StreamResponse(
        headers=wire.headers_for(call.dialect, call.request_id, content_type)
    )
    response.headers["cache-control"] = "no-cache"
    response.headers.update(call.answer_headers)
    try:
        await response.prepare(call.request)
        sse = content_type == wire.SSE_TYPE
        if await _send_all(call, response, events, error_event, paced, sse):
            await response.write_eof()
            call.record.finish(records.OK)
    except (_ClientGone, ConnectionError):
        call.record.finish(records.DISCONNECTED)
    return response
