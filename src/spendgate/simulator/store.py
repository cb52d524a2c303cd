"""Server-side state of the Responses API: stored responses, their items, conversations.

Everything is kept in memory, bounded (the oldest entries go first beyond
``SimulatorOptions.max_stored``), and forgotten by ``POST /_sim/reset``.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .background import Job

_V = TypeVar("_V")


@dataclass(slots=True)
class StoredResponse:
    id: str
    payload: dict[str, Any]
    """The Response object as ``GET /v1/responses/{id}`` returns it."""
    context_tokens: int
    """Its billed input plus its output: what ``previous_response_id`` adds to a request."""
    job: Job | None = None
    """The background job producing it (None when it was not created in the background)."""

    @property
    def status(self) -> str:
        return str(self.payload.get("status"))


@dataclass(slots=True)
class Conversation:
    id: str
    created_at: int
    metadata: dict[str, Any]
    tokens: int = 0
    """Tokens of all its items: what naming it in ``conversation`` adds to a request."""
    item_ids: list[str] = field(default_factory=list)

    def payload(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "conversation",
            "created_at": self.created_at,
            "metadata": self.metadata,
        }


def _put(table: OrderedDict[str, _V], key: str, value: _V, limit: int) -> None:
    table[key] = value
    table.move_to_end(key)
    while len(table) > limit:
        table.popitem(last=False)


class Store:
    """Responses, items and conversations of one simulator."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.responses: OrderedDict[str, StoredResponse] = OrderedDict()
        self.items: OrderedDict[str, int] = OrderedDict()
        self.conversations: OrderedDict[str, Conversation] = OrderedDict()

    def put_response(self, stored: StoredResponse) -> None:
        _put(self.responses, stored.id, stored, self.limit)

    def response(self, response_id: str) -> StoredResponse | None:
        return self.responses.get(response_id)

    def delete_response(self, response_id: str) -> bool:
        return self.responses.pop(response_id, None) is not None

    def add_item(self, item_id: str, tokens: int) -> None:
        _put(self.items, item_id, tokens, self.limit * 4)

    def item_tokens(self, item_id: str) -> int | None:
        return self.items.get(item_id)

    def put_conversation(self, conversation: Conversation) -> None:
        _put(self.conversations, conversation.id, conversation, self.limit)

    def conversation(self, conversation_id: str) -> Conversation | None:
        return self.conversations.get(conversation_id)

    def cancel_jobs(self) -> None:
        """Stop every background job still running (app shutdown)."""
        for stored in self.responses.values():
            if stored.job is not None:
                stored.job.stop()

    def clear(self) -> None:
        self.cancel_jobs()
        self.responses.clear()
        self.items.clear()
        self.conversations.clear()
