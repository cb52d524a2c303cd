"""Offline token counting: what a request will cost before it is sent, and what a stream
produced when the provider reported no usage.

Pure: no network, no environment. OpenAI's ``o200k_base`` and ``cl100k_base`` encodings
come from the ``bpe-openai`` wheel, which ships both (tiktoken downloads them on first use
and so fails offline; shared/CLIENTS.md §10). Each encoding is loaded once, on first use,
by the process-wide `TokenCounter`: the gateway does not load them at start, so a gateway
whose requests never need a count never holds one (``o200k_base`` costs 34 MB of memory,
``cl100k_base`` 16 MB; `spendgate.bpe`), and the first request that needs an encoding
waits for it to load (about 45 ms on the 2-core development machine, once per process and
encoding; docs/benchmarks.md). `token_counter().preload()` loads them ahead.

Exact and estimated counts
    A model's tokenizer family is recognised by its name (`tokenizer_family`), so a new
    generation is known the day it appears: gpt-4o and every later OpenAI generation
    (gpt-5*, gpt-6*, gpt-7-...), the o-series and the codex models are ``o200k_base``;
    gpt-4, gpt-3.5 and the embedding models ``cl100k_base``; ``claude*`` (Bedrock and Vertex
    ids too) Anthropic; ``gemini*`` and ``gemma*`` Google; anything else unknown. The
    gateway counts a request by the model its provider runs (`counting_model`: the upstream
    name, or the gateway name when only that one is recognised, as for an Azure deployment).

    For models whose encoding is public (`encoding_for_model`), text is counted exactly.
    Claude's and Gemini's tokenizers are not published, so for every other model
    `count_text` returns a documented UPPER BOUND::

        max(ceil(o200k_tokens * ESTIMATE_FACTOR_PERCENT / 100), ceil(utf8_bytes / 4))

    Claude's tokenizers produce roughly 10-35% more tokens than ``o200k_base`` on English
    prose and code, and Anthropic's newest tokenizer up to ~35% more than its previous one;
    1.75 covers both effects with a margin. The byte floor covers text that ``o200k_base``
    compresses unusually well (long runs of one character: 1,000 ``=`` are 16 tokens).
    Gemini's tokenizer counts fewer tokens than that, so it is over-reserved, never under:
    a reservation that is too high is returned when the real usage settles, one that is too
    low could let a hard cap be crossed.

Request bodies
    Message formatting follows OpenAI's cookbook: 3 tokens per message, 1 more for a
    ``name``, 3 to prime the reply. Tool and schema definitions are counted as their
    compact JSON text (OpenAI renders them more tersely, so this errs high). Media are
    counted by what they can cost at most:

    * OpenAI images: ``detail: low`` 85 tokens; otherwise the most a model's resizing rules
      allow (1,445 = 8 tiles x 170 + 85 for tile-priced models; per-model figures in
      `_OPENAI_IMAGE_TOKENS`), since the image size is not known without decoding it;
    * Anthropic images: 1,600 (Anthropic resizes to about 1.15 megapixels, w*h/750 tokens);
    * files (PDF, text) given inline: one token per decoded byte, the bound for any
      byte-level BPE; callers should clamp a request's estimate to the model's context
      window, which the provider enforces anyway;
    * audio given inline: one token per 50 decoded bytes (OpenAI's audio: about 10 tokens a
      second), Gemini's per 15 (32 a second): each holds down to 4 kbit/s audio;
    * anything referenced by id or URL whose size cannot be known offline:
      ``UNKNOWN_ATTACHMENT_TOKENS``, and the count is marked inexact.

    A count is ``exact`` only when every part of it came from the model's own encoding.

Speed (bpe-openai 0.1.4, 2-core development machine): a 339-token prompt counts in ~33 µs
(`count_text`), a chat body of it in ~39 µs; large texts at 5-7 M tokens/s. A large body is
first priced by a cheap bound instead (`spendgate.domain.token_bound`).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import orjson

from spendgate.bpe import Tokenizer, load_encoding
from spendgate.domain.utf8 import utf8_length

EncodingName = Literal["o200k_base", "cl100k_base"]

ESTIMATE_FACTOR_PERCENT = 175
BYTES_PER_TOKEN_FLOOR = 4
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
REPLY_PRIMING_TOKENS = 3
OPENAI_IMAGE_LOW_DETAIL_TOKENS = 85
OPENAI_IMAGE_MAX_TOKENS = 1_445
ANTHROPIC_IMAGE_TOKENS = 1_600
OTHER_IMAGE_TOKENS = 4_096  # Gemini: 258 per 768x768 tile; 4,096 covers a 4K image
# Anthropic adds a tool-use system prompt of 313-346 tokens when tools are given.
ANTHROPIC_TOOLS_SYSTEM_TOKENS = 346
FILE_BYTES_PER_TOKEN = 1
AUDIO_BYTES_PER_TOKEN, GEMINI_AUDIO_BYTES = 50, 15  # bytes a token: 4 kbit/s at 10, 32 a second
UNKNOWN_ATTACHMENT_TOKENS = 32_768

# (model prefix, low detail, any other detail): the most one image can cost. Tile-priced
# models fit an image into 2048x2048 then its short side into 768 px: at most 2x4 tiles.
# Patch-priced models cap an image at 1,536 patches times a per-model multiplier.
_OPENAI_IMAGE_TOKENS: tuple[tuple[str, int, int], ...] = (
    ("gpt-4o-mini", 2_833, 2_833 + 8 * 5_667),
    ("gpt-4.1-mini", 2_489, 2_489),  # 1,536 x 1.62
    ("gpt-4.1-nano", 3_779, 3_779),  # 1,536 x 2.46
    ("gpt-5-mini", 2_489, 2_489),
    ("gpt-5-nano", 3_779, 3_779),
    ("o4-mini", 2_642, 2_642),  # 1,536 x 1.72
)

# Every OpenAI generation since gpt-4o uses o200k_base; later generations (gpt-5.x, gpt-6.x,
# gpt-7-...) are assumed to keep it until OpenAI says otherwise, so that a new model name
# is counted exactly on the day it appears instead of falling back to the upper bound.
_O200K_MODELS = re.compile(
    r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-(?:[5-9]|[1-9]\d)|gpt-oss|o\d|codex)"
)
_CL100K_MODELS = re.compile(r"^(gpt-4|gpt-3\.5|gpt-35|text-embedding-3|text-embedding-ada-002)")
# Claude (any generation, Bedrock and Vertex ids too) and Gemini/Gemma: tokenizers that are
# not published, counted with the documented upper bound (module docstring).
_ANTHROPIC_MODELS = re.compile(r"^(?:[a-z]{2,4}\.)?(?:anthropic\.)?claude")
_GEMINI_MODELS = re.compile(r"^(?:gemini|gemma)")


class TokenizerFamily(StrEnum):
    """Whose tokenizer a model uses, recognised by name pattern so that a new generation
    (gpt-6.x, claude-*-5-5, gemini-3.x) is known on the day it appears."""

    O200K = "o200k_base"  # exact: gpt-4o and every later OpenAI generation, o-series, codex
    CL100K = "cl100k_base"  # exact: gpt-4, gpt-3.5, the embedding models
    ANTHROPIC = "anthropic"  # Claude: the upper bound (x1.75 of o200k_base, >= bytes/4)
    GEMINI = "gemini"  # Gemini and Gemma: the same upper bound (over-reserves, never under)
    UNKNOWN = "unknown"  # anything else: the same upper bound


@dataclass(frozen=True, slots=True)
class TokenCount:
    tokens: int
    exact: bool


def _bare_name(model: str) -> str:
    """``openai/ft:gpt-4o-mini:org::id`` → ``gpt-4o-mini:org::id``."""
    return model.lower().rsplit("/", 1)[-1].removeprefix("ft:")


@functools.lru_cache(maxsize=1_024)  # a few regular expressions per call, several a request
def tokenizer_family(model: str) -> TokenizerFamily:
    """The tokenizer family of ``model``, ignoring provider prefixes and ``ft:``."""
    name = _bare_name(model)
    if _O200K_MODELS.match(name):
        return TokenizerFamily.O200K
    if _CL100K_MODELS.match(name):
        return TokenizerFamily.CL100K
    if _ANTHROPIC_MODELS.match(name):
        return TokenizerFamily.ANTHROPIC
    if _GEMINI_MODELS.match(name):
        return TokenizerFamily.GEMINI
    return TokenizerFamily.UNKNOWN


def encoding_for_model(model: str) -> EncodingName | None:
    """The public encoding of an OpenAI model, ignoring provider prefixes and ``ft:``."""
    family = tokenizer_family(model)
    if family is TokenizerFamily.O200K:
        return "o200k_base"
    if family is TokenizerFamily.CL100K:
        return "cl100k_base"
    return None


def counting_model(gateway_name: str, upstream_model: str) -> str:
    """The name to count a request's tokens by: the model the provider runs
    (``upstream_model``), whose tokenizer is what bills, unless only the gateway's own name
    is recognised (an upstream name no pattern knows, served under a known name)."""
    upstream_known = tokenizer_family(upstream_model) is not TokenizerFamily.UNKNOWN
    if not upstream_known and tokenizer_family(gateway_name) is not TokenizerFamily.UNKNOWN:
        return gateway_name
    return upstream_model


# --------------------------------------------------------------------- the encodings


def _load(encoding: EncodingName) -> Tokenizer:
    return load_encoding(encoding)


class TokenCounter:
    """Holds the loaded encodings. One per process is enough: see `token_counter`."""

    def __init__(self) -> None:
        self._tokenizers: dict[EncodingName, Tokenizer] = {}

    def preload(self, encodings: Iterable[EncodingName] = ("o200k_base", "cl100k_base")) -> None:
        for encoding in encodings:
            self._tokenizer(encoding)

    def _tokenizer(self, encoding: EncodingName) -> Tokenizer:
        tokenizer = self._tokenizers.get(encoding)
        if tokenizer is None:
            tokenizer = self._tokenizers.setdefault(encoding, _load(encoding))
        return tokenizer

    def count(self, encoding: EncodingName, text: str) -> int:
        """Exact token count of ``text``; special-token text counts as ordinary text."""
        tokenizer = self._tokenizer(encoding)
        try:
            return tokenizer.count(text)
        except UnicodeEncodeError:  # lone surrogates, which JSON "\ud800" can carry
            return tokenizer.count(text.encode("utf-8", "replace").decode("utf-8"))

    def text(self, model: str, text: str) -> TokenCount:
        encoding = encoding_for_model(model)
        if encoding is not None:
            return TokenCount(self.count(encoding, text), exact=True)
        return TokenCount(self.upper_bound(text), exact=False)

    def upper_bound(self, text: str) -> int:
        """The estimate for models without a public encoding (see the module docstring)."""
        return bound_from_counts(self.count("o200k_base", text), utf8_length(text))


def bound_from_counts(o200k_tokens: int, size_bytes: int) -> int:
    """`TokenCounter.upper_bound` of a text known only by its ``o200k_base`` tokens and
    its UTF-8 bytes."""
    scaled = -(-o200k_tokens * ESTIMATE_FACTOR_PERCENT // 100)
    return max(scaled, -(-size_bytes // BYTES_PER_TOKEN_FLOOR))


@functools.cache
def token_counter() -> TokenCounter:
    """The process-wide counter: encodings are loaded once and shared."""
    return TokenCounter()


# What request bodies are counted with, where not `token_counter()` (`domain.token_bound`).
BODY_COUNTER: ContextVar[TokenCounter | None] = ContextVar("body_counter", default=None)


def count_text(model: str, text: str) -> TokenCount:
    """Tokens of plain text: exact for OpenAI encodings, an upper bound otherwise."""
    return token_counter().text(model, text)


def count_output_text(model: str, text: str) -> TokenCount:
    """Tokens of generated text, for a stream that ended without usage. Only what the client
    saw is counted: hidden reasoning tokens are not in ``text`` (callers bound them)."""
    return token_counter().text(model, text)


# --------------------------------------------------------------------- body walking


def _json_text(value: object) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except (TypeError, orjson.JSONEncodeError):  # e.g. integers beyond 64 bits
        return json.dumps(value, default=str, ensure_ascii=False, separators=(",", ":"))


def _base64_size(data: str) -> int:
    """Decoded size of base64 data, with or without a ``data:...;base64,`` prefix."""
    start = data.find(",") + 1 if data.startswith("data:") else 0
    padding = data.endswith("=") + data.endswith("==")
    return (len(data) - start) * 3 // 4 - padding


class _Tally:
    """Adds up one request body's tokens for one model."""

    def __init__(self, model: str) -> None:
        self.model = _bare_name(model)
        self.encoding = encoding_for_model(model)
        self.counter = BODY_COUNTER.get() or token_counter()
        self.tokens = 0
        self.exact = True

    def add(self, tokens: int, *, exact: bool = True) -> None:
        self.tokens += tokens
        self.exact = self.exact and exact

    def text(self, text: str) -> None:
        if self.encoding is not None:
            self.tokens += self.counter.count(self.encoding, text)
        elif text:
            self.add(self.counter.upper_bound(text), exact=False)

    def value(self, value: object) -> None:
        """Text as text; structures as their JSON; scalars are free."""
        if isinstance(value, str):
            self.text(value)
        elif isinstance(value, Mapping | list):
            self.json(value)

    def json(self, value: object) -> None:
        self.text(_json_text(value))
        self.exact = False

    def openai_image(self, detail: object) -> None:
        low, high = OPENAI_IMAGE_LOW_DETAIL_TOKENS, OPENAI_IMAGE_MAX_TOKENS
        if self.encoding is None:
            low = high = OTHER_IMAGE_TOKENS
        for prefix, model_low, model_high in _OPENAI_IMAGE_TOKENS:
            if self.model.startswith(prefix):
                low, high = model_low, model_high
                break
        self.add(low if detail == "low" else high, exact=False)

    def attachment(self, data: object, bytes_per_token: int) -> None:
        if isinstance(data, str) and data:
            self.add(-(-_base64_size(data) // bytes_per_token), exact=False)
        else:
            self.add(UNKNOWN_ATTACHMENT_TOKENS, exact=False)

    def result(self) -> TokenCount:
        return TokenCount(self.tokens, self.exact)


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# --------------------------------------------------------------------- OpenAI Chat


def _chat_part(tally: _Tally, part: Mapping[str, Any]) -> None:
    kind = part.get("type")
    if kind in ("text", "refusal") and isinstance(part.get(kind), str):
        tally.text(part[kind])
    elif kind == "image_url":
        tally.openai_image(_mapping(part.get("image_url")).get("detail"))
    elif kind == "input_audio":
        tally.attachment(_mapping(part.get("input_audio")).get("data"), AUDIO_BYTES_PER_TOKEN)
    elif kind == "file":
        tally.attachment(_mapping(part.get("file")).get("file_data"), FILE_BYTES_PER_TOKEN)
    else:
        tally.json(part)


def _chat_content(tally: _Tally, content: object) -> None:
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                _chat_part(tally, part)
            else:
                tally.value(part)
    else:
        tally.value(content)


def _chat_message(tally: _Tally, message: object) -> None:
    tally.add(TOKENS_PER_MESSAGE)
    if not isinstance(message, Mapping):
        tally.value(message)
        return
    for key, value in message.items():
        if key == "content":
            _chat_content(tally, value)
        else:
            tally.value(value)
            if key == "name":
                tally.add(TOKENS_PER_NAME)


def _response_schema(tally: _Tally, response_format: object) -> None:
    """A JSON schema the model must follow is shown to it, so it is input."""
    schema = _mapping(response_format)
    if schema.get("type") == "json_schema":
        tally.json(schema.get("json_schema"))


def count_chat_input(model: str, body: Mapping[str, Any]) -> TokenCount:
    """Input tokens of an OpenAI Chat Completions body (never raises on odd shapes)."""
    tally = _Tally(model)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            _chat_message(tally, message)
        tally.add(REPLY_PRIMING_TOKENS)
    for key in ("tools", "functions"):
        if body.get(key):
            tally.json(body[key])
    _response_schema(tally, body.get("response_format"))
    return tally.result()


# --------------------------------------------------------------------- OpenAI Responses


def _responses_part(tally: _Tally, part: Mapping[str, Any]) -> None:
    kind = part.get("type")
    if kind in ("input_text", "output_text", "text") and isinstance(part.get("text"), str):
        tally.text(part["text"])
    elif kind == "refusal" and isinstance(part.get("refusal"), str):
        tally.text(part["refusal"])
    elif kind == "input_image":
        tally.openai_image(part.get("detail"))
    elif kind == "input_file":
        tally.attachment(part.get("file_data"), FILE_BYTES_PER_TOKEN)
        tally.value(part.get("filename"))
    elif kind == "input_audio":
        tally.attachment(_mapping(part.get("input_audio")).get("data"), AUDIO_BYTES_PER_TOKEN)
    else:
        tally.json(part)


def _responses_content(tally: _Tally, content: object) -> None:
    if isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                _responses_part(tally, part)
            else:
                tally.value(part)
    else:
        tally.value(content)


def _responses_item(tally: _Tally, item: object) -> None:
    if not isinstance(item, Mapping):
        tally.value(item)
        return
    kind = item.get("type", "message" if "role" in item else None)
    if kind == "message":
        tally.add(TOKENS_PER_MESSAGE)
        tally.value(item.get("role"))
        _responses_content(tally, item.get("content"))
    elif kind == "function_call_output":
        _responses_content(tally, item.get("output"))
    elif kind == "item_reference":  # stored server-side: size unknown here
        tally.add(0, exact=False)
    else:  # function calls, reasoning, tool calls and items not invented yet
        tally.json(item)


def count_responses_input(model: str, body: Mapping[str, Any]) -> TokenCount:
    """Input tokens of an OpenAI Responses body.

    ``previous_response_id``, ``conversation`` and stored ``prompt`` templates add input
    the body does not show; the count is then marked inexact (and is a lower bound).
    """
    tally = _Tally(model)
    tally.value(body.get("instructions"))
    items = body.get("input")
    if isinstance(items, list):
        for item in items:
            _responses_item(tally, item)
    elif isinstance(items, str):
        tally.add(TOKENS_PER_MESSAGE)
        tally.text(items)
    tally.add(REPLY_PRIMING_TOKENS)
    if body.get("tools"):
        tally.json(body["tools"])
    text_format = _mapping(_mapping(body.get("text")).get("format"))
    if text_format.get("type") == "json_schema":
        tally.json(text_format.get("schema"))
    if body.get("prompt"):
        tally.json(body["prompt"])
    if body.get("previous_response_id") or body.get("conversation"):
        tally.add(0, exact=False)
    return tally.result()


# --------------------------------------------------------------------- Anthropic Messages


def _anthropic_document(tally: _Tally, block: Mapping[str, Any]) -> None:
    source = _mapping(block.get("source"))
    kind = source.get("type")
    if kind == "base64":
        tally.attachment(source.get("data"), FILE_BYTES_PER_TOKEN)
    elif kind == "text":
        tally.value(source.get("data"))
    elif kind == "content":
        _anthropic_blocks(tally, source.get("content"))
    else:  # url, file: size unknown offline
        tally.attachment(None, FILE_BYTES_PER_TOKEN)
    tally.value(block.get("title"))
    tally.value(block.get("context"))


def _anthropic_block(tally: _Tally, block: Mapping[str, Any]) -> None:
    kind = block.get("type")
    if kind == "text":
        tally.value(block.get("text"))
    elif kind == "image":
        tally.add(ANTHROPIC_IMAGE_TOKENS, exact=False)
    elif kind == "document":
        _anthropic_document(tally, block)
    elif kind == "tool_use":
        tally.value(block.get("name"))
        tally.json(block.get("input"))
    elif kind == "tool_result":
        _anthropic_blocks(tally, block.get("content"))
    elif kind == "thinking":
        tally.value(block.get("thinking"))
    elif kind == "redacted_thinking":
        tally.value(block.get("data"))
    else:  # server tool results, search results and blocks not invented yet
        tally.json(block)


def _anthropic_blocks(tally: _Tally, content: object) -> None:
    if isinstance(content, list):
        for block in content:
            if isinstance(block, Mapping):
                _anthropic_block(tally, block)
            else:
                tally.value(block)
    else:
        tally.value(content)


def count_anthropic_input(model: str, body: Mapping[str, Any]) -> TokenCount:
    """Input tokens of an Anthropic Messages body: system, messages and tools.

    Claude's tokenizer is not public, so this is an upper-bound estimate unless the model
    name maps to an OpenAI encoding (a Messages-shaped route to an OpenAI model).
    """
    tally = _Tally(model)
    _anthropic_blocks(tally, body.get("system"))
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            tally.add(TOKENS_PER_MESSAGE)
            _anthropic_blocks(tally, _mapping(message).get("content"))
    if body.get("tools"):
        tally.json(body["tools"])
        tally.add(ANTHROPIC_TOOLS_SYSTEM_TOKENS, exact=False)
    return tally.result()


# --------------------------------------------------------------------- Embeddings


def _is_token_ids(value: object) -> bool:
    return isinstance(value, list) and all(
        isinstance(i, int) and not isinstance(i, bool) for i in value
    )


def count_embedding_input(model: str, body: Mapping[str, Any]) -> TokenCount:
    """Input tokens of an embeddings body: a string, strings, token ids or lists of them."""
    tally = _Tally(model)
    inputs = body.get("input")
    if isinstance(inputs, str) or _is_token_ids(inputs):
        inputs = [inputs]
    if isinstance(inputs, list):
        for item in inputs:
            if _is_token_ids(item):
                tally.add(len(item))
            else:
                tally.value(item)
    return tally.result()


# --------------------------------------------------------------------- Gemini


def _gemini_part(tally: _Tally, part: Mapping[str, Any]) -> None:
    if isinstance(part.get("text"), str):
        tally.text(part["text"])
        return
    inline = _mapping(part.get("inlineData") or part.get("inline_data"))
    if inline:
        mime = str(inline.get("mimeType") or inline.get("mime_type") or "")
        if mime.startswith("image/"):
            tally.add(OTHER_IMAGE_TOKENS, exact=False)
        else:
            per_token = GEMINI_AUDIO_BYTES if mime[:6] == "audio/" else FILE_BYTES_PER_TOKEN
            tally.attachment(inline.get("data"), per_token)  # (a video: its audio with it)
    elif part.get("fileData") or part.get("file_data"):  # by URI: size unknown offline
        tally.attachment(None, FILE_BYTES_PER_TOKEN)
    else:  # functionCall, functionResponse, executableCode...
        tally.json(part)


def _gemini_content(tally: _Tally, content: object) -> None:
    tally.add(TOKENS_PER_MESSAGE)
    parts = _mapping(content).get("parts")
    if isinstance(parts, list):
        for part in parts:
            _gemini_part(tally, _mapping(part))


def count_gemini_input(model: str, body: Mapping[str, Any]) -> TokenCount:
    """Input tokens of a Gemini ``generateContent`` body: ``systemInstruction``,
    ``contents``, ``tools`` and a response schema. Gemini's tokenizer is not public: an
    upper bound unless the upstream model maps to an OpenAI encoding."""
    tally = _Tally(model)
    system = body.get("systemInstruction") or body.get("system_instruction")
    if system:
        _gemini_content(tally, system)
    contents = body.get("contents")
    if isinstance(contents, list):
        for content in contents:
            _gemini_content(tally, content)
    tally.add(REPLY_PRIMING_TOKENS)
    if body.get("tools"):
        tally.json(body["tools"])
    config = _mapping(body.get("generationConfig") or body.get("generation_config"))
    for name in ("responseSchema", "responseJsonSchema", "response_schema", "response_json_schema"):
        if config.get(name):
            tally.json(config[name])
    return tally.result()
