"""Anthropic server tools the simulator *performs*: web search, web fetch, code execution.

A Messages request whose ``tools`` hold a server tool (``type`` ``web_search_*``,
``web_fetch_*`` or ``code_execution_*``) gets a deterministic number of uses of each:
``SimulatorOptions.server_tool_uses`` (1), or ``x-sim-server-tool-uses`` (``3`` for
every tool, ``web_search=2,web_fetch=0`` per tool name), never above the tool's
``max_uses`` nor `MAX_USES_PER_TOOL`. Each use answers a ``server_tool_use`` block and
its result block (``web_search_tool_result``, ``web_fetch_tool_result``,
``code_execution_tool_result`` for ``code_execution_20250522``,
``bash_code_execution_tool_result`` for later versions), streamed too, before the text.

Billing (the defaults are `SimulatorOptions` fields):

* a use's ``input`` (the query, URL or code) counts as output tokens; the text is
  planned within ``max_tokens`` minus them;
* its result counts as *input* tokens (uncached, so in ``usage.input_tokens`` whatever
  the ``x-sim-cache*`` headers say): a web search returns ``web_search_results`` (5)
  results of ``search_result_tokens`` (2,000) tokens each = 10,000 tokens; a fetched page
  ``web_fetch_tokens`` (5,000, capped by the tool's ``max_content_tokens``); a code run
  ``code_execution_tokens`` (200). ``x-sim-tool-result-tokens: N`` sets the tokens of one
  search result / page / run;
* ``usage.server_tool_use`` = ``{"web_search_requests": n, "web_fetch_requests": m}``
  (code execution is billed by container time, not counted there; the record counts it).

Streams: ``message_start`` reports the input before any tool ran (and zero requests);
``message_delta`` repeats every input field with the results included, and the
``server_tool_use`` counts, as Anthropic's cumulative delta usage does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import wire
from .tokens import value_tokens
from .validation import is_int

if TYPE_CHECKING:
    from .context import Call

MAX_USES_PER_TOOL = 50
RETRIEVED_AT = "2025-01-01T00:00:00Z"
_KINDS = (("web_search_", "web_search"), ("web_fetch_", "web_fetch"), ("code_execution_", "code"))


@dataclass(frozen=True, slots=True)
class ToolUse:
    kind: str
    """``web_search``, ``web_fetch`` or ``code_execution``."""
    use_block: dict[str, Any]
    result_block: dict[str, Any]
    result_tokens: int
    query_tokens: int


def _kind(tool: object) -> tuple[str, str] | None:
    """(kind, tool type) of a server tool definition, None for any other tool."""
    if not isinstance(tool, dict):
        return None
    kind = tool.get("type")
    if not isinstance(kind, str):
        return None
    for prefix, name in _KINDS:
        if kind.startswith(prefix):
            return ("code_execution" if name == "code" else name), kind
    return None


def _web_search(use: int, call: Call) -> tuple[dict[str, Any], Any, int]:
    options, per_result = call.options, call.faults.tool_result_tokens
    count = max(1, options.web_search_results)
    results = [
        {
            "type": "web_search_result",
            "url": f"https://example.com/search/{use + 1}/{rank + 1}",
            "title": f"Simulated result {rank + 1}",
            "encrypted_content": f"EncSimResult{use + 1}x{rank + 1}",
            "page_age": None,
        }
        for rank in range(count)
    ]
    each = options.search_result_tokens if per_result is None else per_result
    return {"query": f"simulated query {use + 1}"}, results, count * each


def _web_fetch(use: int, call: Call, tool: dict[str, Any]) -> tuple[dict[str, Any], Any, int]:
    url = f"https://example.com/page/{use + 1}"
    tokens = call.options.web_fetch_tokens
    if call.faults.tool_result_tokens is not None:
        tokens = call.faults.tool_result_tokens
    cap = tool.get("max_content_tokens")
    if is_int(cap) and cap > 0:
        tokens = min(tokens, cap)
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "Simulated page."},
        "title": f"Simulated page {use + 1}",
        "citations": None,
    }
    content = {"type": "web_fetch_result", "url": url, "retrieved_at": RETRIEVED_AT}
    return {"url": url}, {**content, "content": document}, tokens


def _code(use: int, call: Call, legacy: bool) -> tuple[dict[str, Any], Any, int]:
    tokens = call.options.code_execution_tokens
    if call.faults.tool_result_tokens is not None:
        tokens = call.faults.tool_result_tokens
    result_type = "code_execution_result" if legacy else "bash_code_execution_result"
    content = {
        "type": result_type,
        "stdout": f"{use + 1}\n",
        "stderr": "",
        "return_code": 0,
        "content": [],
    }
    query = {"code": f"print({use + 1})"} if legacy else {"command": f"echo {use + 1}"}
    return query, content, tokens


def _names(kind: str, tool_type: str) -> tuple[str, str]:
    """(``server_tool_use`` name, result block type)."""
    if kind == "code_execution":
        if tool_type == "code_execution_20250522":
            return "code_execution", "code_execution_tool_result"
        return "bash_code_execution", "bash_code_execution_tool_result"
    return kind, f"{kind}_tool_result"


def _one_use(kind: str, tool_type: str, tool: dict[str, Any], use: int, call: Call) -> ToolUse:
    if kind == "web_search":
        query, content, tokens = _web_search(use, call)
    elif kind == "web_fetch":
        query, content, tokens = _web_fetch(use, call, tool)
    else:
        query, content, tokens = _code(use, call, tool_type == "code_execution_20250522")
    name, result_type = _names(kind, tool_type)
    use_id = wire.new_id("srvtoolu_")
    use_block = {"type": "server_tool_use", "id": use_id, "name": name, "input": query}
    result = {"type": result_type, "tool_use_id": use_id, "content": content}
    return ToolUse(kind, use_block, result, tokens, value_tokens(query))


def plan_tool_uses(call: Call) -> list[ToolUse]:
    """The server tool uses a request gets, in the order of its ``tools``."""
    tools = call.body.get("tools")
    uses: list[ToolUse] = []
    for tool in tools if isinstance(tools, list) else []:
        found = _kind(tool)
        if found is None:
            continue
        kind, tool_type = found
        count = min(call.faults.uses_of(kind, call.options.server_tool_uses), MAX_USES_PER_TOOL)
        cap = tool.get("max_uses")
        if is_int(cap):
            count = min(count, cap)
        uses.extend(_one_use(kind, tool_type, tool, use, call) for use in range(count))
    return uses


def has_server_tools(body: dict[str, Any]) -> bool:
    tools = body.get("tools")
    return isinstance(tools, list) and any(_kind(tool) for tool in tools)


def use_counts(uses: list[ToolUse]) -> dict[str, int]:
    """Uses per kind, for the record: ``{"web_search": 2, "code_execution": 1}``."""
    counts: dict[str, int] = {}
    for use in uses:
        counts[use.kind] = counts.get(use.kind, 0) + 1
    return counts


def server_tool_usage(uses: list[ToolUse]) -> dict[str, int]:
    """Anthropic's ``usage.server_tool_use``."""
    counts = use_counts(uses)
    return {
        "web_search_requests": counts.get("web_search", 0),
        "web_fetch_requests": counts.get("web_fetch", 0),
    }
