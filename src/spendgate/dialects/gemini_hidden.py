"""Hidden input in Gemini ``generateContent`` requests: a named context cache
(``cachedContent``, billed as cached input), files by URI (``fileData`` parts: a Files API
upload, a Cloud Storage object, a YouTube video, whose size the body does not show: an
hour of audio bills 115,200 tokens, an hour of video about a million), and the built-in
tools that run on Google's side (Google Search, code execution, URL context), none of
them limited per request. Either spelling of a field counts (the SDKs send camelCase,
REST clients may send snake_case).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendgate.dialects.hidden import HiddenInput, mappings

# Built-in tools that run on Google's side: each call is one more pass over the context.
_SERVER_TOOLS = {
    "googleSearch": "google_search",
    "google_search": "google_search",
    "googleSearchRetrieval": "google_search",
    "google_search_retrieval": "google_search",
    "codeExecution": "code_execution",
    "code_execution": "code_execution",
    "urlContext": "url_context",
    "url_context": "url_context",
}


def _files(where: str, content: object) -> list[str]:
    """The parts of a content that name a file by URI."""
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return [
        f"{where}.parts[{index}]: fileData"
        for index, part in mappings(parts)
        if part.get("fileData") or part.get("file_data")
    ]


def gemini_hidden(body: Mapping[str, Any]) -> HiddenInput:
    reasons = ["cachedContent"] if body.get("cachedContent") or body.get("cached_content") else []
    system = body.get("systemInstruction") or body.get("system_instruction")
    reasons += _files("systemInstruction", system)
    for index, content in mappings(body.get("contents")):
        reasons += _files(f"contents[{index}]", content)
    tools: list[tuple[str, int | None]] = []
    for _, tool in mappings(body.get("tools")):
        tools += [(fee, None) for name, fee in _SERVER_TOOLS.items() if name in tool]
    return HiddenInput(reasons=tuple(reasons), tools=tuple(tools))


# Attachments that cannot hold audio; any other (audio, video, a file by URI of unknown
# type) may be billed at the audio input rate.
_SILENT_MIME = ("image/", "text/", "application/pdf", "application/json")


def gemini_may_hold_audio(body: Mapping[str, Any]) -> bool:
    """Whether the request's input may hold audio: an inline or by-URI part whose type is
    not one that cannot (`_SILENT_MIME`)."""
    contents = body.get("contents")
    if isinstance(contents, Mapping):
        contents = [contents]
    system = body.get("systemInstruction") or body.get("system_instruction")
    for _, content in [*mappings(contents), *mappings([system])]:
        for _, part in mappings(content.get("parts")):
            blob = part.get("inlineData") or part.get("inline_data")
            blob = blob or part.get("fileData") or part.get("file_data")
            if isinstance(blob, Mapping):
                mime = str(blob.get("mimeType") or blob.get("mime_type") or "").lower()
                if not mime.startswith(_SILENT_MIME):
                    return True
    return False


def audio_tokens(usage: Mapping[str, Any]) -> int:
    """The audio part of the input in a ``usageMetadata``: ``AUDIO`` entries of
    ``promptTokensDetails`` and ``toolUsePromptTokensDetails``."""
    total = 0
    for key in ("promptTokensDetails", "toolUsePromptTokensDetails"):
        for _, entry in mappings(usage.get(key)):
            count = entry.get("tokenCount")
            if entry.get("modality") == "AUDIO" and type(count) is int and count > 0:
                total += count
    return total
