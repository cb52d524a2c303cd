"""The Gemini API (CLIENTS.md §7): ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent`` and ``:countTokens`` (``/v1/`` too).

* The model is in the path; the key in ``x-goog-api-key`` or ``?key=``.
* ``usageMetadata``: ``promptTokenCount`` includes ``cachedContentTokenCount``
  (``x-sim-cached-tokens``); ``thoughtsTokenCount`` (``x-sim-reasoning-tokens``) is
  output *outside* ``candidatesTokenCount``; ``maxOutputTokens`` caps both together.
  Counts that are zero are left out, as Gemini does.
* The tier that served a request naming a top-level ``serviceTier`` (or
  ``x-sim-service-tier``) is the response header ``x-gemini-service-tier``, as Gemini
  reports it (``standard`` when a Priority request was downgraded).
* Streams: with ``?alt=sse`` each chunk is ``data: {GenerateContentResponse}\\r\\n\\r\\n``,
  no ``[DONE]``; every chunk carries the usage so far, the last one the totals and the
  ``finishReason``. Without ``alt=sse`` the same chunks come as one JSON array, streamed.
* A blocked prompt (``x-sim-block-prompt``) is answered, whole or streamed, with one
  response holding ``promptFeedback.blockReason`` and no candidates, as Gemini does.
* ``x-sim-no-finish``: a stream that ends (its JSON array closed) with no candidate's
  ``finishReason``, as Gemini streams sometimes do; ``x-sim-finish-every-chunk``: one whose
  every chunk says ``finishReason: STOP``, as Gemini's streams did in 2024.
* Errors: ``{"error": {"code", "message", "status"}}``; a mid-stream error is a
  ``data:`` chunk holding one.
* Fields are read under their JSON name or their proto name, as Google's JSON parser
  reads them (``generationConfig`` or ``generation_config``, ``maxOutputTokens`` or
  ``max_output_tokens``); a field named both ways is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import orjson

from . import records, wire
from .reporting import gemini_tier
from .streaming import Event, stream_events
from .tokens import (
    InputPlan,
    OutputPlan,
    chunk_text,
    generate_text,
    plan_input,
    prompt_seed,
    value_tokens,
)
from .validation import Problem

if TYPE_CHECKING:
    from aiohttp import web

    from .context import Call

_PER_CONTENT = 3
_OVERLOADED = "The model is overloaded. (simulated)"
_MID_STREAM_ERROR = {"error": {"code": 503, "message": _OVERLOADED, "status": "UNAVAILABLE"}}


def _event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\r\n\r\n"


def mid_stream_error(_sent: int) -> bytes:
    return _event(_MID_STREAM_ERROR)


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _field(body: object, name: str) -> Any:
    """``name`` (lowerCamelCase) or its proto name (snake_case), whichever is there."""
    if not isinstance(body, dict):
        return None
    value = body.get(name)
    return body.get(_snake(name)) if value is None else value


def _twice(body: object, names: tuple[str, ...]) -> str | None:
    if not isinstance(body, dict):
        return None
    return next((n for n in names if n in body and _snake(n) in body), None)


def _request(body: dict[str, Any]) -> dict[str, Any]:
    inner = body.get("generateContentRequest")
    return inner if isinstance(inner, dict) else body


def gemini_input_tokens(body: dict[str, Any]) -> int:
    contents = body.get("contents")
    items = contents if isinstance(contents, list) else []
    system = _field(body, "systemInstruction")
    if isinstance(system, dict):
        items = [system, *items]
    tokens = sum(_PER_CONTENT + value_tokens(item) for item in items)
    return tokens + value_tokens(body.get("tools"))


def gemini_audio_tokens(body: dict[str, Any]) -> int:
    """Tokens of the prompt's inline ``audio/*`` parts (billed on top of
    `gemini_input_tokens`, which skips base64 data): one per 16 decoded bytes, Gemini's 32
    tokens a second of 4 kbit/s audio."""
    contents = body.get("contents")
    total = 0
    for content in contents if isinstance(contents, list) else []:
        parts = content.get("parts") if isinstance(content, dict) else None
        for part in parts if isinstance(parts, list) else []:
            blob = _field(part, "inlineData")
            if isinstance(blob, dict) and str(_field(blob, "mimeType")).startswith("audio/"):
                data = _field(blob, "data")
                total += len(data) * 3 // 4 // 16 if isinstance(data, str) else 0
    return total


def _check(body: dict[str, Any]) -> Problem | None:
    contents = body.get("contents")
    if not isinstance(contents, list) or not contents:
        return Problem("* GenerateContentRequest.contents: contents is not specified\n")
    twice = _twice(body, ("generationConfig", "systemInstruction")) or _twice(
        body.get("generationConfig") or body.get("generation_config"),
        ("maxOutputTokens", "candidateCount", "thinkingConfig"),
    )
    if twice:
        return Problem(f'Invalid JSON payload received. Field "{_snake(twice)}" set twice.')
    config = _field(body, "generationConfig")
    if config is None:
        return None
    if not isinstance(config, dict):
        return Problem('Invalid JSON payload received. Unknown name "generationConfig".')
    for name in ("maxOutputTokens", "candidateCount"):
        value = _field(config, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            return Problem(f"Invalid value at 'generation_config.{name}', \"{value}\"")
    return None


def usage_metadata(
    inputs: InputPlan, plan: OutputPlan, text_so_far: int, audio: int = 0
) -> dict[str, Any]:
    """Gemini's ``usageMetadata``; zero counts are omitted. ``audio``: the prompt's audio
    tokens, reported apart in ``promptTokensDetails`` as Gemini does."""
    usage: dict[str, Any] = {"promptTokenCount": inputs.total}
    if text_so_far:
        usage["candidatesTokenCount"] = text_so_far
    usage["totalTokenCount"] = inputs.total + text_so_far + plan.reasoning
    audio = min(audio, inputs.total)
    details = []
    if inputs.total > audio or not audio:
        details.append({"modality": "TEXT", "tokenCount": inputs.total - audio})
    if audio:
        details.append({"modality": "AUDIO", "tokenCount": audio})
    usage["promptTokensDetails"] = details
    if inputs.cached:
        usage["cachedContentTokenCount"] = inputs.cached
        usage["cacheTokensDetails"] = [{"modality": "TEXT", "tokenCount": inputs.cached}]
    if plan.reasoning:
        usage["thoughtsTokenCount"] = plan.reasoning
    return usage


class _Answer:
    def __init__(self, call: Call) -> None:
        body = call.body
        self.call = call
        self.model = call.request.match_info["model"]
        self.id = wire.new_id("")[:22]
        self.audio = gemini_audio_tokens(body)
        self.inputs = plan_input(gemini_input_tokens(body) + self.audio, call.faults)
        config = _field(body, "generationConfig") or {}
        seed = prompt_seed(_field(body, "systemInstruction"), body.get("contents"))
        self.plan = call.plan_output_for(seed, _field(config, "maxOutputTokens"))
        self.words = generate_text(seed, self.plan.text)
        self.blocked = call.faults.block_prompt
        self.tier = gemini_tier(_field(body, "serviceTier"), call.faults.service_tier)
        call.record.service_tier = self.tier
        if self.tier is not None:
            call.answer_headers["x-gemini-service-tier"] = self.tier
        call.account(self.inputs, 0 if self.blocked else self.plan.total)
        call.record.response_id = self.id

    def _blocked(self, reason: str) -> dict[str, Any]:
        """A prompt the safety filters refused: no candidates, the prompt's usage."""
        chunk: dict[str, Any] = {"promptFeedback": {"blockReason": reason}}
        total = self.inputs.total
        usage = self.call.report_usage({"promptTokenCount": total, "totalTokenCount": total})
        if usage is not None:
            chunk["usageMetadata"] = usage
        chunk["modelVersion"] = self.model
        chunk["responseId"] = self.id
        return chunk

    def _chunk(self, text: str, finish: bool, text_so_far: int) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}}
        faults = self.call.faults
        if (finish or faults.finish_every_chunk) and not faults.no_finish:
            candidate["finishReason"] = "MAX_TOKENS" if self.plan.truncated else "STOP"
        candidate["index"] = 0
        chunk: dict[str, Any] = {"candidates": [candidate]}
        usage = self.call.report_usage(
            usage_metadata(self.inputs, self.plan, text_so_far, self.audio)
        )
        if usage is not None:
            chunk["usageMetadata"] = usage
        chunk["modelVersion"] = self.model
        chunk["responseId"] = self.id
        return chunk

    def whole(self) -> dict[str, Any]:
        if self.blocked:
            return self._blocked(self.blocked)
        return self._chunk("".join(self.words), True, self.plan.text)

    def chunks(self) -> Iterator[tuple[dict[str, Any], int]]:
        if self.blocked:
            yield self._blocked(self.blocked), 0
            return
        pieces = chunk_text(self.words, self.call.options.tokens_per_chunk) or [("", 0)]
        sent = 0
        for number, (text, count) in enumerate(pieces):
            sent += count
            yield self._chunk(text, number == len(pieces) - 1, sent), count


async def generate_content(call: Call) -> web.StreamResponse:
    problem = _check(call.body)
    if problem:
        return call.refuse(problem)
    answer = _Answer(call)
    chunk = answer.whole()
    call.record.usage_reported = chunk.get("usageMetadata")
    call.record.output_tokens_sent = call.record.output_tokens
    call.record.finish(records.OK)
    return call.json(chunk)


async def stream_generate_content(call: Call) -> web.StreamResponse:
    problem = _check(call.body)
    if problem:
        return call.refuse(problem)
    answer = _Answer(call)
    if call.request.query.get("alt") == "sse":
        events = (
            Event(_event(chunk), count, chunk.get("usageMetadata"))
            for chunk, count in answer.chunks()
        )
        return await stream_events(call, events, mid_stream_error)
    return await stream_events(call, _array(answer), mid_stream_error, content_type=wire.JSON_TYPE)


def _array(answer: _Answer) -> Iterator[Event]:
    """The chunks as one JSON array: ``[`` + chunk, ``,\\r\\n`` + chunk..., ``]``."""
    first = True
    for chunk, count in answer.chunks():
        head = b"[" if first else b",\r\n"
        first = False
        yield Event(head + orjson.dumps(chunk), count, chunk.get("usageMetadata"))
    yield Event(b"]")


async def count_tokens(call: Call) -> web.StreamResponse:
    body = _request(call.body)
    problem = _check(body)
    if problem:
        return call.refuse(problem)
    count = gemini_input_tokens(body)
    call.record.input_tokens = count
    call.record.finish(records.OK)
    return call.json(
        {"totalTokens": count, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": count}]}
    )
