"""The fingerprint of a request's content, for loop detection: the same model, messages
or input, tools... sent again, however it is delivered, and whatever ids, timestamps and
cache keys the client stamps on each send. Pure.

What it covers and ignores is documented in docs/limits.md (loop detection); a body is
fingerprinted in the event loop or, when large, in a worker process
(`spendgate.dialects.offloaded`): both call `fingerprint` on the same parsed JSON.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

# Top-level fields that change between two sends of the same logical request, or only say
# how it is delivered, billed or cached: never what the model is asked.
VOLATILE = frozenset(
    {
        "stream",
        "stream_options",
        "metadata",  # Claude Code: metadata.user_id carries the session id
        "client_metadata",  # Codex: fresh on every call
        "user",
        "safety_identifier",
        "store",
        "prompt_cache_key",  # a cache key is a cache-busting parameter
        "prompt_cache_retention",
        "service_tier",
        "turn_id",
        "create_time",
        "created_at",
        "timestamp",
    }
)

# The message lists whose items (and content blocks within) carry ids and stamps of their
# own: Chat's and Anthropic's ``messages``, Responses' ``input``, Anthropic's ``system``.
CONVERSATION = ("messages", "input", "system")

# Keys inside those items that name or stamp an item rather than say what it holds. Ids of
# tool calls are opaque handles: the call's name, arguments and result still count.
ITEM_VOLATILE = frozenset(
    {
        "id",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "turn_id",
        "create_time",
        "created_at",
        "timestamp",
        "cache_control",  # where a client puts its cache breakpoints
        "metadata",
        "client_metadata",
    }
)


def fingerprint(body: Mapping[str, Any]) -> str:
    """Of the request's content (model, messages or input, tools...), not its delivery."""
    return hashlib.blake2b(orjson.dumps(content(body)), digest_size=12).hexdigest()


def content(body: Mapping[str, Any]) -> dict[str, Any]:
    """What `fingerprint` hashes: the body without its volatile fields."""
    kept = {name: value for name, value in body.items() if name not in VOLATILE}
    for name in CONVERSATION:
        if name in kept:
            kept[name] = _without_stamps(kept[name])
    return kept


# Keys inside items whose value is what a tool was called with: kept exactly as sent
# (an ``id`` argument of a tool is content, not a stamp).
VERBATIM = frozenset({"input", "arguments"})


def _without_stamps(value: Any) -> Any:
    """``value`` without `ITEM_VOLATILE` keys at any depth (scalars are not visited: a
    call per string would double the cost of fingerprinting a long conversation)."""
    if isinstance(value, list):
        return [_without_stamps(item) if isinstance(item, list | dict) else item for item in value]
    if isinstance(value, dict):
        kept = {}
        for name, inner in value.items():
            if name in ITEM_VOLATILE:
                continue
            nested = isinstance(inner, list | dict) and name not in VERBATIM
            kept[name] = _without_stamps(inner) if nested else inner
        return kept
    return value
