"""``/v1/conversations``: a minimal Conversations API whose items are billed as context.

* ``POST /v1/conversations`` ``{"items": [...], "metadata": {...}}`` (both optional, at
  most 20 items) -> ``{"id": "conv_...", "object": "conversation", ...}``;
* ``GET /v1/conversations/{id}`` -> the same object (404 for an unknown id);
* ``POST /v1/conversations/{id}/items`` ``{"items": [...]}`` -> the items with their ids.

Each item gets an id (``msg_...`` unless it has one) and costs 4 + its tokens; a
response naming the conversation is billed for all its items (`responses_state`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import records, wire
from .responses_state import item_tokens
from .store import Conversation
from .validation import Problem, invalid_type

if TYPE_CHECKING:
    from aiohttp import web

    from .context import Call

MAX_ITEMS = 20


def _check_items(items: object, required: bool) -> Problem | None:
    if items is None:
        return Problem("Missing required parameter: 'items'.", "items") if required else None
    if not isinstance(items, list):
        return invalid_type("items", "an array", items)
    if len(items) > MAX_ITEMS:
        message = f"Invalid 'items': array too long. Expected at most {MAX_ITEMS} items."
        return Problem(message, "items", "array_above_max_length")
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            return invalid_type(f"items[{index}]", "an object", item)
    return None


def _add(call: Call, conversation: Conversation, items: list[dict[str, Any]]) -> list[Any]:
    added = []
    for item in items:
        item_id = item.get("id")
        if not isinstance(item_id, str):
            item_id = wire.new_id("msg_")
        tokens = item_tokens(item)
        call.store.add_item(item_id, tokens)
        conversation.tokens += tokens
        conversation.item_ids.append(item_id)
        added.append({"type": "message", **item, "id": item_id})
    return added


async def create(call: Call) -> web.StreamResponse:
    body = call.body
    metadata = body.get("metadata")
    problem = _check_items(body.get("items"), required=False)
    if problem is None and metadata is not None and not isinstance(metadata, dict):
        problem = invalid_type("metadata", "an object", metadata)
    if problem:
        return call.refuse(problem)
    conversation = Conversation(wire.new_id("conv_"), wire.now(), metadata or {})
    _add(call, conversation, body.get("items") or [])
    call.store.put_conversation(conversation)
    call.record.finish(records.OK)
    return call.json(conversation.payload())


def _lookup(call: Call) -> Conversation | web.Response:
    wanted = call.request.match_info["conversation_id"]
    conversation = call.store.conversation(wanted)
    if conversation is None:
        return call.error(404, f"Conversation with id '{wanted}' not found.", param="conversation")
    return conversation


async def retrieve(call: Call) -> web.StreamResponse:
    conversation = _lookup(call)
    if not isinstance(conversation, Conversation):
        return conversation
    call.record.finish(records.OK)
    return call.json(conversation.payload())


async def add_items(call: Call) -> web.StreamResponse:
    conversation = _lookup(call)
    if not isinstance(conversation, Conversation):
        return conversation
    items = call.body.get("items")
    problem = _check_items(items, required=True)
    if problem or not isinstance(items, list):
        return call.refuse(problem or Problem("Missing required parameter: 'items'.", "items"))
    added = _add(call, conversation, items)
    call.record.finish(records.OK)
    first, last = added[0]["id"] if added else None, added[-1]["id"] if added else None
    listing = {"object": "list", "data": added, "first_id": first, "last_id": last}
    return call.json({**listing, "has_more": False})
