"""What the simulator received and answered, one record per API request."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

PENDING = "pending"
OK = "ok"
ERROR = "error"
DIED = "died"
DISCONNECTED = "disconnected"


@dataclass(slots=True)
class RequestRecord:
    """One API request and what was sent back.

    ``outcome`` is ``pending`` while the answer is being written, then one of ``ok``,
    ``error`` (an error status or an injected mid-stream error), ``died`` (the simulator
    aborted the connection on purpose, ``x-sim-die-after-chunks``) or ``disconnected``
    (the client went away first). ``completed`` is true for ``ok`` and ``error``: the
    whole planned answer was written.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    raw_body: bytes
    body: Any
    request_id: str
    status: int = 200
    stream: bool = False
    completed: bool = False
    outcome: str = PENDING
    chunks_sent: int = 0
    usage_reported: dict[str, Any] | None = None
    """The provider-shaped usage exactly as sent (for Anthropic streams: the
    ``message_start`` usage updated by ``message_delta``), or None if none went out."""
    input_tokens: int = 0
    """Ground truth: all input tokens of the request (cached ones included)."""
    output_tokens: int = 0
    """Ground truth: output tokens generated for the answer (all choices, reasoning included)."""
    output_tokens_sent: int = 0
    """Output tokens whose text actually went out (less than planned after a cut)."""
    received_at: float = field(default_factory=time.time)
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.outcome != PENDING

    def finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.completed = outcome in (OK, ERROR)
        self.finished_at = time.time()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready copy (``raw_body`` decoded as UTF-8, undecodable bytes replaced)."""
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "headers": self.headers,
            "raw_body": self.raw_body.decode("utf-8", "replace"),
            "body": self.body,
            "request_id": self.request_id,
            "status": self.status,
            "stream": self.stream,
            "completed": self.completed,
            "outcome": self.outcome,
            "chunks_sent": self.chunks_sent,
            "usage_reported": self.usage_reported,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "output_tokens_sent": self.output_tokens_sent,
            "received_at": self.received_at,
            "finished_at": self.finished_at,
        }
