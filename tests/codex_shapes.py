"""Request shapes of Codex CLI 0.169.0 (CLIENTS.md §8.2): its tool list, whose JSON schemas
have properties named ``type`` (an MCP server's tool here), a freeform ``custom`` tool with a
Lark grammar, and the body keys it sends (no ``max_output_tokens``)."""

from __future__ import annotations

from typing import Any

LARK_PATCH_GRAMMAR = """start: begin_patch hunk+ end_patch
begin_patch: "*** Begin Patch" LF
end_patch: "*** End Patch" LF?

hunk: add_hunk | delete_hunk | update_hunk
add_hunk: "*** Add File: " filename LF add_line+
delete_hunk: "*** Delete File: " filename LF
update_hunk: "*** Update File: " filename LF change_move? change?
filename: /(.+)/
add_line: "+" /(.+)/ LF -> line
%import common.LF
"""

CODEX_TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "shell",
        "description": (
            "Runs a shell command and returns its output.\n"
            "- Always set the `workdir` param when using the shell function."
        ),
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "command": {
                    "type": "array",
                    "items": {"type": "string"},
                    "description": "The command to execute",
                },
                "justification": {
                    "type": "string",
                    "description": "Only set if with_escalated_permissions is true.",
                },
                "timeout_ms": {
                    "type": "number",
                    "description": "The timeout for the command in milliseconds",
                },
                "with_escalated_permissions": {
                    "type": "boolean",
                    "description": "Whether to request escalated permissions.",
                },
                "workdir": {
                    "type": "string",
                    "description": "The working directory to execute the command in",
                },
            },
            "required": ["command"],
            "additionalProperties": False,
        },
    },
    {
        "type": "function",
        "name": "update_plan",
        "description": "Updates the task plan.",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "explanation": {"type": "string"},
                "plan": {
                    "type": "array",
                    "description": "The list of steps",
                    "items": {
                        "type": "object",
                        "properties": {
                            "status": {
                                "type": "string",
                                "description": "One of: pending, in_progress, completed",
                            },
                            "step": {"type": "string"},
                        },
                        "required": ["step", "status"],
                        "additionalProperties": False,
                    },
                },
            },
            "required": ["plan"],
            "additionalProperties": False,
        },
    },
    {
        "type": "custom",
        "name": "apply_patch",
        "description": (
            "Use the `apply_patch` tool to edit files. "
            "This is a FREEFORM tool, so do not wrap the patch in JSON."
        ),
        "format": {
            "type": "grammar",
            "syntax": "lark",
            "definition": LARK_PATCH_GRAMMAR,
        },
    },
    {
        "type": "function",
        "name": "view_image",
        "description": (
            "Attach a local image (by filesystem path) to the conversation context for this turn."
        ),
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Local filesystem path to an image file"}
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    },
    {
        "type": "function",
        "name": "mcp__files__search",
        "description": "Search the workspace (an MCP server's tool).",
        "strict": False,
        "parameters": {
            "type": "object",
            "properties": {
                "type": {
                    "type": "string",
                    "enum": ["file", "directory", "symbol"],
                    "description": "What to search for",
                },
                "query": {"type": "string"},
                "filters": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"type": {"type": "string"}, "value": {"type": "string"}},
                    },
                },
                "format": {
                    "type": "object",
                    "properties": {"type": {"type": "string", "enum": ["json", "text"]}},
                },
            },
            "required": ["type", "query"],
            "additionalProperties": False,
        },
    },
]


def codex_body(model: str, prompt: str) -> dict[str, Any]:
    """A ``codex exec`` request body: streamed, stored nowhere, no output ceiling."""
    return {
        "model": model,
        "instructions": "You are Codex, a coding agent based on GPT-5.",
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": prompt}],
            }
        ],
        "tools": CODEX_TOOLS,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
    }
