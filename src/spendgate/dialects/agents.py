"""Coding agents, and how an answer a budget clamped ends for them.

Claude Code and Codex are recognised by their headers (shared/CLIENTS.md §8): Claude Code
sends ``user-agent: claude-cli/...`` and ``x-app: cli``; Codex an ``originator`` (or
``user-agent``) starting with ``codex``.

When a budget lowers a request's output ceiling and the answer stops at it, the provider
says so (Anthropic ``stop_reason: "max_tokens"``, a Responses ``response.incomplete`` with
reason ``max_output_tokens``, Chat ``finish_reason: "length"``). Measured with the real
agents (docs/budgets.md, "Coding agents and the clamp"): Claude Code answers that by
sending the whole conversation again with "Output token limit hit. Resume directly...",
which the budget cannot afford, so the user paid for the clamped answer and saw only the
refusal; Codex treats it as a failure (exit 1, nothing printed). So for these agents, when
the budget (not the client, not the model's maximum) set the ceiling, spendgate ends the
turn instead: the stop says the turn ended, and the agent shows the text that was paid for.
The response's ``x-spendgate-output-clamped`` header still says what happened.

Each rewrite takes one SSE event (or a whole JSON answer) and returns it unchanged unless
it carries the ceiling's stop; it is called only on the answers of such requests.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from spendgate.dialects.codex import is_codex

CLAUDE_CODE = "claude-code"
CODEX = "codex"


def coding_agent(headers: Mapping[str, str]) -> str | None:
    """Which coding agent sent the request, if one we know."""
    if is_codex(headers):
        return CODEX
    agent = headers.get("user-agent", "").lower()
    if agent.startswith("claude-cli") or headers.get("x-app", "").lower() == "cli":
        return CLAUDE_CODE
    return None


Rewrite = Callable[[dict[str, Any]], bool]  # changes the document in place; True if it did


def rewrite_event(raw: bytes, marker: bytes, rewrite: Rewrite) -> bytes:
    """``raw`` (an SSE event, or a whole JSON answer) with ``rewrite`` applied to its JSON,
    if ``marker`` is in it and the rewrite changes something; the ``event:`` line follows
    the document's new ``type``."""
    if marker not in raw:
        return raw
    stripped = raw.lstrip()
    if stripped.startswith((b"{", b"[")):  # a whole answer
        document = _load(raw)
        if document is None or not rewrite(document):
            return raw
        return orjson.dumps(document)
    data_lines = [line for line in raw.splitlines() if line.startswith(b"data:")]
    if len(data_lines) != 1:
        return raw
    document = _load(data_lines[0][5:])
    if document is None or not rewrite(document):
        return raw
    name = document.get("type") if b"event:" in raw else None
    head = f"event: {name}\n".encode() if isinstance(name, str) else b""
    return head + b"data: " + orjson.dumps(document) + b"\n\n"


def at_ceiling(raw: bytes) -> bool:
    """Whether ``raw`` (a Responses stream event) is a ``response.incomplete`` that stopped
    at ``max_output_tokens``."""
    if b"response.incomplete" not in raw:
        return False
    data_lines = [line for line in raw.splitlines() if line.startswith(b"data:")]
    document = _load(data_lines[0][5:]) if len(data_lines) == 1 else None
    response = document.get("response") if document is not None else None
    details = response.get("incomplete_details") if isinstance(response, dict) else None
    return isinstance(details, dict) and details.get("reason") == "max_output_tokens"


def _load(data: bytes) -> dict[str, Any] | None:
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def messages_end_turn(document: dict[str, Any]) -> bool:
    """Anthropic: ``stop_reason: "max_tokens"`` (an answer, or a ``message_delta``)."""
    for holder in (document, document.get("delta")):
        if isinstance(holder, dict) and holder.get("stop_reason") == "max_tokens":
            holder["stop_reason"] = "end_turn"
            return True
    return False


def responses_completed(document: dict[str, Any]) -> bool:
    """Responses: a ``response.incomplete`` for ``max_output_tokens`` becomes
    ``response.completed``, and items left ``incomplete`` by it ``completed``."""
    changed = False
    response = document.get("response") if "response" in document else document
    if isinstance(response, dict):
        details = response.get("incomplete_details")
        if isinstance(details, dict) and details.get("reason") != "max_output_tokens":
            return False  # stopped for another reason (a content filter): told as it is
        if document.get("type") == "response.incomplete":
            document["type"] = "response.completed"
            changed = True
        if response.get("status") == "incomplete":
            response["status"] = "completed"
            response["incomplete_details"] = None
            changed = True
        for item in response.get("output") or ():
            changed |= _complete(item)
    changed |= _complete(document.get("item"))
    return changed


def _complete(item: object) -> bool:
    if isinstance(item, dict) and item.get("status") == "incomplete":
        item["status"] = "completed"
        return True
    return False


def chat_stop(document: dict[str, Any]) -> bool:
    """Chat Completions: ``finish_reason: "length"`` becomes ``"stop"``."""
    changed = False
    for choice in document.get("choices") or ():
        if isinstance(choice, dict) and choice.get("finish_reason") == "length":
            choice["finish_reason"] = "stop"
            changed = True
    return changed
