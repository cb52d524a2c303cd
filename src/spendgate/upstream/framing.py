"""How a provider frames a streamed answer into events: server-sent events (every
provider spendgate speaks to), and Gemini's streamed JSON array (``streamGenerateContent``
without ``alt=sse``); AWS event-stream (Bedrock) would be another behind the same seam."""

from __future__ import annotations

import re
from typing import Protocol

from spendgate.upstream.sse import EventSplitter, EventTooLarge, SseEvent


class Splitter(Protocol):
    """Fed the bytes of a stream as they arrive; returns every complete event."""

    def feed(self, chunk: bytes) -> list[SseEvent]: ...

    def pending(self) -> bytes: ...

    def flush(self) -> list[SseEvent]:
        """At the end of the stream: what the bytes left over still make (an event whose
        blank line never came), as the clients read them."""
        ...


class Framing(Protocol):
    content_type: str

    def splitter(self, max_event_bytes: int) -> Splitter:
        """One stream's splitter; an event larger than ``max_event_bytes`` raises
        `spendgate.upstream.sse.EventTooLarge`."""
        ...


class SseFraming:
    content_type = "text/event-stream"

    def splitter(self, max_event_bytes: int) -> Splitter:
        return EventSplitter(max_event_bytes)


SSE = SseFraming()


class JsonArrayFraming:
    """Gemini's ``streamGenerateContent`` without ``alt=sse``: one JSON array, streamed,
    each element a whole response chunk (``[{...},\\r\\n{...}]``)."""

    content_type = "application/json"

    def splitter(self, max_event_bytes: int) -> Splitter:
        return JsonArraySplitter(max_event_bytes)


JSON_ARRAY = JsonArrayFraming()

_QUOTE, _ESCAPE = ord('"'), ord("\\")
_OPENERS, _CLOSERS = frozenset(b"{["), frozenset(b"}]")
# The only bytes that change the splitter's state: everything between them (the text of a
# string, a base64 image) is skipped by the regex engine, not looked at byte by byte.
_SIGNIFICANT = re.compile(rb'["\\{}\[\]]')


class JsonArraySplitter:
    """Splits a streamed JSON array into its elements without re-encoding them: each event's
    ``raw`` is the bytes since the previous one (the ``[`` or ``,`` before it included) and
    its ``data`` the element; the closing ``]`` is an event with empty ``data``. Linear in
    the bytes fed: it keeps the nesting depth and whether it is inside a string."""

    __slots__ = ("_buffer", "_depth", "_escaped", "_max", "_start", "_string")

    def __init__(self, max_event_bytes: int) -> None:
        self._buffer = bytearray()
        self._max = max_event_bytes
        self._depth = 0  # 1 inside the array, 2 inside one of its elements, ...
        self._string = False
        self._escaped = False
        self._start = -1  # where the current element begins in the buffer

    def feed(self, chunk: bytes) -> list[SseEvent]:
        events: list[SseEvent] = []
        offset = len(self._buffer)
        self._buffer += chunk
        buffer = self._buffer
        cut = 0
        escaped_at = offset if self._escaped else -1  # the byte a backslash escapes
        self._escaped = False
        for match in _SIGNIFICANT.finditer(buffer, offset):
            index = match.start()
            byte = buffer[index]
            if self._string:
                if index == escaped_at:
                    continue
                if byte == _ESCAPE:
                    escaped_at = index + 1
                    self._escaped = escaped_at == len(buffer)  # (it comes in the next chunk)
                elif byte == _QUOTE:
                    self._string = False
                continue
            if byte == _QUOTE:
                self._string = True
            elif byte in _OPENERS:
                self._depth += 1
                if self._depth == 2:
                    self._start = index
            elif byte in _CLOSERS:
                self._depth -= 1
                if self._depth <= 1:  # an element ended (1), or the array itself (0)
                    data = bytes(buffer[self._start : index + 1]) if self._depth else b""
                    raw = bytes(buffer[cut : index + 1])
                    events.append(SseEvent(raw=raw, event=None, data=data))
                    cut = index + 1
        del buffer[:cut]
        if self._start >= 0:
            self._start -= cut
        if len(buffer) > self._max:
            raise EventTooLarge(
                f"the provider sent a stream element of more than {self._max} bytes "
                "(server.max_upstream_event_bytes)"
            )
        return events

    def pending(self) -> bytes:
        return bytes(self._buffer)

    def flush(self) -> list[SseEvent]:
        return []  # an element the array never finished is no element
