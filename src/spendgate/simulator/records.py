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
    cached_input_tokens: int = 0
    """Of ``input_tokens``: read from the prompt cache."""
    cache_write_input_tokens: int = 0
    """Of ``input_tokens``: written to the prompt cache (both TTLs)."""
    context_input_tokens: int = 0
    """Of ``input_tokens``: server-side state the body did not carry (the stored context of
    ``previous_response_id`` / ``conversation``, ``item_reference`` items)."""
    tool_result_tokens: int = 0
    """Of ``input_tokens``: results of Anthropic server tools (searches, fetches, code runs)."""
    server_tool_uses: dict[str, int] = field(default_factory=dict)
    """Server tool uses performed, e.g. ``{"web_search": 2, "web_fetch": 1}``."""
    service_tier: str | None = None
    """The service tier the answer reported (``default``, ``priority``, ``standard``...)."""
    response_id: str | None = None
    """The id of what the answer created (``chatcmpl-...``, ``resp_...``, ``msg_...``);
    for ``/v1/responses/{id}`` requests the response they named."""
    response_status: str | None = None
    """Responses API: the response's status, kept current while a background job runs
    (``queued``, ``in_progress``, ``completed``, ``incomplete``, ``cancelled``)."""

    @property
    def finished(self) -> bool:
        return self.outcome != PENDING

    def finish(self, outcome: str) -> None:
        self.outcome = outcome
        self.completed = outcome in (OK, ERROR)
        self.finished_at = time.time()

    @property
    def billed(self) -> dict[str, Any]:
        """What the provider would bill for this request, for comparison with a ledger.

        For a background response the counts settle when the job ends (completed:
        the whole answer; cancelled: the input and the output generated so far)."""
        return {
            "input_tokens": self.input_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "cache_write_input_tokens": self.cache_write_input_tokens,
            "context_input_tokens": self.context_input_tokens,
            "tool_result_tokens": self.tool_result_tokens,
            "output_tokens": self.output_tokens,
            "server_tool_uses": dict(self.server_tool_uses),
            "service_tier": self.service_tier,
        }

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
            "response_id": self.response_id,
            "response_status": self.response_status,
            "billed": self.billed,
        }
