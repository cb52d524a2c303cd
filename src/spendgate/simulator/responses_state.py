"""Server-side context of the Responses API, billed like OpenAI bills it.

Input tokens a request is billed for, beyond its own body (``input``, ``instructions``,
``tools``, as `tokens` counts them):

* ``previous_response_id``: the stored response's full context, i.e. its billed input
  (which holds its own previous context) plus its output (reasoning included). An
  unknown (or ``store: false``) id is a 400 ``previous_response_not_found``, as OpenAI
  answers it; a response still running in the background a 400 too.
* ``conversation`` (an id, or ``{"id": ...}``): the tokens of all the conversation's
  items: those given to ``POST /v1/conversations`` / ``.../items`` (4 + their tokens
  each) and, for every response that named it, that response's own input and its output.
  Unknown id: 404.
* ``input`` items ``{"type": "item_reference", "id": ...}``: the referenced item's
  tokens: an output message its text tokens, a reasoning item its reasoning tokens, an
  input item that carried an ``id`` (or was added to a conversation) 4 + its tokens.
  Unknown id: 404.

These context tokens are part of ``usage.input_tokens`` and of the record's
``input_tokens``; the record's ``context_input_tokens`` says how many of them the body
did not carry. A response and its items are remembered as planned when it is created
(a stream cut short is remembered whole).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .store import StoredResponse
from .tokens import MESSAGE_OVERHEAD, value_tokens
from .validation import Problem
from .validation_openai import conversation_id

if TYPE_CHECKING:
    from .context import Call
    from .openai_responses import ResponseAnswer
    from .store import Conversation

RUNNING = frozenset({"queued", "in_progress"})


class Context:
    """What a Responses request adds to its own input from the server-side state."""

    __slots__ = ("conversation", "references", "tokens")

    def __init__(
        self, tokens: int = 0, references: int = 0, conversation: Conversation | None = None
    ) -> None:
        self.tokens = tokens
        """Stored context: the previous response's, or the conversation's."""
        self.references = references
        """Tokens of the ``item_reference`` input items."""
        self.conversation = conversation


def _previous(call: Call, response_id: str) -> int | Problem:
    stored = call.store.response(response_id)
    if stored is None:
        message = f"Previous response with id '{response_id}' not found."
        return Problem(message, "previous_response_id", "previous_response_not_found")
    if stored.status in RUNNING:
        message = f"Previous response with id '{response_id}' is still in progress."
        return Problem(message, "previous_response_id", None)
    return stored.context_tokens


def _references(call: Call) -> int | Problem:
    items = call.body.get("input")
    total = 0
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or item.get("type") != "item_reference":
            continue
        item_id = item.get("id")
        tokens = call.store.item_tokens(item_id) if isinstance(item_id, str) else None
        if tokens is None:
            return Problem(f"Item with id '{item_id}' not found.", "input", None, status=404)
        total += tokens
    return total


def resolve_context(call: Call) -> Context | Problem:
    """The stored context a request names, or why it cannot be used."""
    body = call.body
    tokens: int | Problem = 0
    conversation = None
    previous = body.get("previous_response_id")
    if isinstance(previous, str):
        tokens = _previous(call, previous)
    wanted = conversation_id(body.get("conversation"))
    if wanted is not None:
        conversation = call.store.conversation(wanted)
        if conversation is None:
            message = f"Conversation with id '{wanted}' not found."
            return Problem(message, "conversation", None, status=404)
        tokens = conversation.tokens
    references = _references(call)
    if isinstance(tokens, Problem):
        return tokens
    if isinstance(references, Problem):
        return references
    return Context(tokens, references, conversation)


def item_tokens(item: dict[str, Any]) -> int:
    """What an input item costs when it is referenced or replayed from a conversation."""
    return MESSAGE_OVERHEAD + value_tokens(item)


def _remember_items(call: Call, answer: ResponseAnswer) -> list[str]:
    store, plan = call.store, answer.plan
    ids = []
    items = call.body.get("input")
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") != "item_reference":
            item_id = item.get("id")
            if isinstance(item_id, str):
                store.add_item(item_id, item_tokens(item))
                ids.append(item_id)
    if plan.reasoning:
        store.add_item(answer.reasoning_id, plan.reasoning)
        ids.append(answer.reasoning_id)
    store.add_item(answer.message_id, plan.text)
    ids.append(answer.message_id)
    return ids


def remember(call: Call, answer: ResponseAnswer, payload: dict[str, Any]) -> StoredResponse | None:
    """Keep the response (unless ``store: false``), its items and its conversation turn."""
    item_ids = _remember_items(call, answer)
    conversation = answer.context.conversation
    if conversation is not None:
        conversation.tokens += answer.own_input + answer.plan.total
        conversation.item_ids.extend(item_ids)
    if call.body.get("store") is False:
        return None
    stored = StoredResponse(answer.id, payload, answer.inputs.total + answer.plan.total)
    call.store.put_response(stored)
    return stored
