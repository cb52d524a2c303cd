"""Split a byte stream into Server-Sent Events without decoding or re-encoding them.

The gateway relays upstream events byte for byte (Anthropic SDKs need the ``event:``
lines intact: shared/CLIENTS.md §0.3), so an SSE library that parses and re-serializes
events is the wrong tool here; all we need is the event boundary (a blank line).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SseEvent:
    raw: bytes  # the event's bytes, separator included, exactly as received
    event: str | None  # the `event:` field, if any
    data: bytes  # the `data:` lines joined with b"\n"


def parse_event(raw: bytes) -> SseEvent:
    name: str | None = None
    data_lines: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            value = line[5:]
            data_lines.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return SseEvent(raw=raw, event=name, data=b"\n".join(data_lines))


class EventSplitter:
    """Feed bytes as they arrive; get back every complete event."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[SseEvent]:
        buffer = self._buffer + chunk if self._buffer else chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[SseEvent] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            raw = buffer[start : end + 2]
            if raw.strip():
                events.append(parse_event(raw))
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def pending(self) -> bytes:
        """Bytes of an event that never got its terminating blank line."""
        return self._buffer
