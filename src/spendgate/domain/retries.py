"""Agent retries, seen by session: a request a session sends again after a refusal or an
upstream failure is a retry, although the agent says nothing about it.

The SDKs number their own retries (``x-stainless-retry-count``), but Claude Code and Codex
retry at the application level and always send ``0`` (CLIENTS.md §12.8): Claude Code made
10 retries and Codex 17-29 with ``retries: 0`` in the reports. Both name their session on
every request (``x-claude-code-session-id``, Codex's ``session-id``), and an agent's
session is sequential: after a failed request, the session's next request for the same
model and the same conversation is that request again (Claude Code may drop betas or tools
when it retries a ``400``, and Codex sends fresh item ids, so the body is not compared, only
its shape: the surface, the model asked for and the number of conversation items).

A request is counted as retry N when its session's last request with the same shape failed
(a refusal, or an upstream error status) as retry N-1, within `RETRY_WINDOW_S` of that
failure. A success of that shape ends the chain; a failure of another shape starts a chain
of its own; a success of another shape is no retry and leaves the chain as it is (agents
send background requests between their retries, such as Claude Code's title and
token-count calls). Only sessions whose
last request failed are remembered, at most `MAX_SESSIONS` (the least recently failed are
forgotten first), so the map stays small and each request costs one dict lookup.

Per process: with several gateway processes behind a load balancer, a retry that lands on
another process than the failure is not counted.

Pure: times are passed in (monotonic seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

RETRY_WINDOW_S = 120.0  # Claude Code's backoff reaches ~38 s, Codex waits up to retry-after (60)
MAX_SESSIONS = 10_000


@dataclass(frozen=True, slots=True)
class Shape:
    """What stays the same when an agent sends a request again."""

    surface: str
    model: str
    items: int  # messages (Chat, Messages) or input items (Responses); -1 if none


def request_shape(surface: str, model: str, body: Mapping[str, Any]) -> Shape:
    """A request's `Shape`: one ``len`` of the body's conversation, nothing hashed."""
    items = body.get("messages", body.get("input"))
    if isinstance(items, list):
        return Shape(surface, model, len(items))
    return Shape(surface, model, -1 if items is None else 1)


@dataclass(frozen=True, slots=True)
class _Failure:
    shape: Shape
    at: float
    retry: int  # which retry the failed request was (0: the first try)


class SessionRetries:
    def __init__(self, window_s: float = RETRY_WINDOW_S, capacity: int = MAX_SESSIONS) -> None:
        self.window_s = window_s
        self.capacity = capacity
        self._failed: OrderedDict[str, _Failure] = OrderedDict()

    def retry_of(self, session: str | None, shape: Shape, now: float) -> int:
        """Which retry this request is: 0 for a first try, N for the session's N-th sending
        of a request that failed."""
        if session is None:
            return 0
        failure = self._failed.get(session)
        if failure is None or failure.shape != shape or now - failure.at > self.window_s:
            return 0
        return failure.retry + 1

    def ended(self, session: str | None, shape: Shape, now: float, *, retry: int, ok: bool) -> None:
        """Remember how a session's request ended: a failure starts or extends the chain,
        a success of the chain's shape ends it."""
        if session is None:
            return
        if ok:
            failure = self._failed.get(session)
            if failure is not None and failure.shape == shape:
                del self._failed[session]
            return
        self._failed[session] = _Failure(shape, now, retry)
        self._failed.move_to_end(session)
        while len(self._failed) > self.capacity:
            self._failed.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failed)
