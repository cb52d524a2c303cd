"""How a provider frames a streamed answer into events. Server-sent events today (every
provider spendgate speaks to); AWS event-stream (Bedrock) or JSON arrays (Gemini's
non-SSE streams) are other framings behind the same seam."""

from __future__ import annotations

from typing import Protocol

from spendgate.upstream.sse import EventSplitter, SseEvent


class Splitter(Protocol):
    """Fed the bytes of a stream as they arrive; returns every complete event."""

    def feed(self, chunk: bytes) -> list[SseEvent]: ...

    def pending(self) -> bytes: ...


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
