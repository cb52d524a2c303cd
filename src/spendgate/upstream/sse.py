"""Split a byte stream into Server-Sent Events without decoding or re-encoding them.

The gateway relays upstream events byte for byte (Anthropic SDKs need the ``event:``
lines intact: shared/CLIENTS.md §0.3), so an SSE library that parses and re-serializes
events is the wrong tool here; all we need is the event boundary (a blank line).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class SseEvent:
    raw: bytes  # the event's bytes, separator included, exactly as received
    event: str | None  # the `event:` field, if any
    data: bytes  # the `data:` lines joined with b"\n"


def parse_event(raw: bytes) -> SseEvent:
    # The shapes of almost every event a provider sends, read without splitting lines:
    # one `data: ` line (OpenAI, Gemini), or an `event: ` line and one `data: ` line
    # (Anthropic). `raw` ends in "\n\n" (the splitter's cut); a lone "\r" ends a line too.
    end = len(raw) - 2
    if raw.startswith(b"data: ") and raw.find(b"\n", 6) == end and b"\r" not in raw:
        return SseEvent(raw, None, raw[6:end])
    if raw.startswith(b"event: "):
        cut = raw.find(b"\n", 7)
        if (
            raw.startswith(b"data: ", cut + 1)
            and raw.find(b"\n", cut + 1) == end
            and b"\r" not in raw
        ):
            return SseEvent(raw, raw[7:cut].strip().decode("utf-8", "replace"), raw[cut + 7 : end])
    return parse_lines(raw)


def parse_lines(raw: bytes) -> SseEvent:
    """Any event, line by line (`parse_event` reads the common shapes without this)."""
    name: str | None = None
    data_lines: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return SseEvent(raw, name, b"\n".join(data_lines))


class EventTooLarge(Exception):
    """An event grew past the splitter's bound without its terminating blank line."""


DEFAULT_MAX_EVENT_BYTES = 64 * 1024 * 1024


class EventSplitter:
    """Feed bytes as they arrive; get back every complete event.

    Linear in the bytes fed, however an event is cut into chunks: an incomplete event's
    chunks are kept as they came and searched only where new bytes can end it (a chunk,
    plus the byte before it), and joined once, when it ends. ``max_event_bytes`` bounds
    what one event may hold before `EventTooLarge` is raised."""

    __slots__ = ("_cr", "_max", "_parts", "_size")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._max = max_event_bytes
        self._cr = False  # the last chunk ended in "\r": its "\n" may come next

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self._cr:
            chunk = b"\r" + chunk
            self._cr = False
        if chunk.endswith(b"\r"):
            chunk, self._cr = chunk[:-1], True
        if b"\r" in chunk:
            chunk = chunk.replace(b"\r\n", b"\n")
        if not chunk:
            return []
        # where an event can end: in this chunk, or across its first byte and the last kept
        joined = bool(self._parts) and self._parts[-1][-1:] == b"\n" and chunk[:1] == b"\n"
        if not joined and chunk.find(b"\n\n") < 0:
            self._keep(chunk)
            return []
        buffer = b"".join((*self._parts, chunk)) if self._parts else chunk
        self._parts.clear()
        self._size = 0
        events: list[SseEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = buffer[start : end + 2]
            if not raw.isspace():
                events.append(parse_event(raw))
            start = end + 2
        if start < len(buffer):
            self._keep(buffer[start:])
        return events

    def _keep(self, part: bytes) -> None:
        self._size += len(part)
        if self._size > self._max:
            self._parts.clear()
            self._size = 0
            raise EventTooLarge(
                f"the provider sent an event of more than {self._max} bytes "
                "(server.max_upstream_event_bytes)"
            )
        self._parts.append(part)

    def pending(self) -> bytes:
        """Bytes of an event that never got its terminating blank line."""
        return b"".join(self._parts) + (b"\r" if self._cr else b"")

    def flush(self) -> list[SseEvent]:
        """The event the stream closed in after its last line, before its blank line, ended
        by one: google-genai (like every SSE reader that flushes at the end) still reads it,
        so the relay must too. One cut inside its data (not JSON, nor ``[DONE]``) is not an
        event: the stream broke off."""
        rest = b"".join(self._parts).rstrip(b"\r\n")
        self._parts.clear()
        self._size = 0
        self._cr = False
        if not rest or rest.isspace():
            return []
        event = parse_event(rest + b"\n\n")
        if event.data != b"[DONE]":
            try:
                orjson.loads(event.data)
            except orjson.JSONDecodeError:
                return []
        return [event]
