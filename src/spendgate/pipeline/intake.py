"""What the request path reads from an incoming HTTP request before it decides anything:
the credential, the JSON body (bounded), the model, the session and the SDK's retry
count; and the per-request reporter of outcome events."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
from aiohttp import compression_utils, web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError

from spendgate.config.schema import ServerConfig
from spendgate.dialects.offloaded import shape_of
from spendgate.domain.identity import KEY_PREFIX, ApiKey
from spendgate.domain.json_shape import Shape, containers_at_most, shape
from spendgate.errors import InvalidRequest, RequestTimeout, RequestTooLarge, UnsupportedEncoding
from spendgate.events import Event, Events
from spendgate.services.offload import LARGE_BODY_BYTES, Offload
from spendgate.text import escape

REQUEST_ID_HEADER = "x-spendgate-request-id"
REQUEST_ID_KEY = web.RequestKey(REQUEST_ID_HEADER, str)  # a str key warns on aiohttp >= 3.14


def credential(request: web.Request, *, in_query: bool = False) -> str | None:
    """The gateway key: ``Authorization: Bearer``, ``x-api-key``, ``x-goog-api-key``, or
    (``in_query``: Gemini's REST clients) the ``key`` query parameter. Where a client sends
    two (a provider's key left in its environment beside the spendgate key), the one that
    is a spendgate key (``sk-sg-``); else the first given, in that order."""
    given: list[str] = []
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            given.append(value.strip())
    for name in ("x-api-key", "x-goog-api-key"):
        found = request.headers.get(name)
        if found:
            given.append(found)
    if in_query and (found := request.query.get("key")):
        given.append(found)
    if len(given) < 2:
        return given[0] if given else None
    return next((secret for secret in given if secret.startswith(KEY_PREFIX)), given[0])


# The content-codings aiohttp undoes before the body is read (the body then goes upstream
# decoded, without the header); brotli and zstd only where their libraries are installed.
READ_ENCODINGS = (
    ("gzip", "deflate")
    + (("br",) if compression_utils.HAS_BROTLI else ())
    + (("zstd",) if compression_utils.HAS_ZSTD else ())
)


def unsupported_encoding(coding: str | None) -> UnsupportedEncoding:
    """A body compressed in a way this gateway cannot read: 415, naming what it reads."""
    named = f"content-encoding {coding!r}" if coding else "its content-encoding"
    return UnsupportedEncoding(
        f"The request body is compressed with {named}, which this gateway does not read; "
        f"send it uncompressed or with content-encoding {', '.join(READ_ENCODINGS)}.",
        headers={"accept-encoding": ", ".join(READ_ENCODINGS)},
    )


# Below this many opening brackets (and `LARGE_BODY_BYTES`), a body is parsed and measured
# on the event loop: a few milliseconds at most.
INLINE_CONTAINERS = 20_000


async def read_json_object(
    request: web.Request, server: ServerConfig, offload: Offload
) -> tuple[bytes, dict[str, Any]]:
    """The body as bytes and as a JSON object, bounded in size, in objects and arrays
    (`server.max_json_containers`) and in depth (`server.max_json_depth`), so that no
    later step (the loop fingerprint, re-serializing, counting) meets a body it cannot
    handle, and no body holds the event loop long. A large body is measured in a worker
    process before the loop parses it."""
    limit = server.max_body_bytes
    coding = request.headers.get("content-encoding")
    if coding is not None and coding.strip().lower() not in ("", "identity", *READ_ENCODINGS):
        raise unsupported_encoding(coding)  # (aiohttp passes other codings through as they are)
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    try:
        raw = await read_body(request, server)
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(None, limit) from None
    except RequestPayloadError as exc:  # a compressed body that does not decode, a cut body
        raise InvalidRequest(
            f"The request body could not be read: {_payload_problem(exc)}."
        ) from None
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    # (a large body is not even scanned here: the worker parses it anyway)
    bound = containers_at_most(raw) if len(raw) < LARGE_BODY_BYTES else INLINE_CONTAINERS + 1
    measured: Shape | None = None
    if bound > INLINE_CONTAINERS:
        measured = await offload.run(shape_of, raw)
        if measured is not None:
            _check_shape(measured, server)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if "recursion" in str(exc) or "depth limit" in str(exc):  # deeper than orjson reads
            raise _too_deep(None, server.max_json_depth) from None
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if measured is None and bound >= server.max_json_depth:
        _check_shape(shape(body), server)  # (a body with fewer brackets cannot nest deeper)
    return raw, body


async def read_body(request: web.Request, server: ServerConfig) -> bytes:
    """The whole request body, which must arrive within ``server.request_body_timeout_s``
    (`RequestTimeout`, 408): every route that reads a body reads it here, so that no
    client holds a connection open by sending a body a byte at a time."""
    try:
        if request.content.is_eof():  # the whole body came with the headers: nothing to wait for
            return await request.read()
        async with asyncio.timeout(server.request_body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise RequestTimeout(
            f"The request body did not arrive within {server.request_body_timeout_s:g} s "
            "(server.request_body_timeout_s)."
        ) from None


def _payload_problem(exc: RequestPayloadError) -> str:
    cause = exc.__cause__
    if isinstance(cause, HttpProcessingError) and "content-encoding" in cause.message:
        return f"it is not valid {cause.message.rsplit(': ', 1)[-1]} as its content-encoding says"
    message = getattr(cause, "message", None) or str(cause or exc)
    return str(message).strip() or type(exc).__name__


def _check_shape(found: Shape, server: ServerConfig) -> None:
    if found.depth > server.max_json_depth:
        raise _too_deep(found.depth, server.max_json_depth)
    if found.containers > server.max_json_containers:
        raise RequestTooLarge(
            f"The request body holds {found.containers:,} JSON objects and arrays; this "
            f"gateway accepts at most {server.max_json_containers:,} "
            "(server.max_json_containers).",
        )


def _too_deep(depth: int | None, limit: int) -> InvalidRequest:
    found = f"{depth} levels" if depth is not None else "more than 1024 levels"
    return InvalidRequest(
        f"The request body nests JSON {found} deep; this gateway accepts at most {limit} "
        "(server.max_json_depth)."
    )


def _too_large(size: int | None, limit: int) -> RequestTooLarge:
    got = f" ({size} bytes)" if size is not None else ""
    return RequestTooLarge(f"The request body{got} exceeds this gateway's limit of {limit} bytes.")


def require_model(body: dict[str, Any], in_path: str | None = None) -> str:
    """The model the request asks for: the body's ``model``, or ``in_path`` where the
    surface names it in the path (Gemini)."""
    if in_path is not None:
        if not in_path:
            raise InvalidRequest("The request path needs a model.", param="model")
        return in_path.removeprefix("models/")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("The request needs a 'model' (a non-empty string).", param="model")
    return model


def session_of(request: web.Request, names: list[str]) -> str | None:
    """The client's session id, escaped: it is stored and shown back (a session budget's
    members), and a header byte that is not UTF-8 arrives as a lone surrogate, which no
    store can encode."""
    for name in names:
        value = request.headers.get(name)
        if value:
            return escape(value)[:200]
    return None


MAX_RETRY_COUNT = 1000  # a larger claim is not believed (and must fit the ledger's integer)


def retry_count_of(request: web.Request) -> int:
    """The SDK's own retry count (``x-stainless-retry-count``): ASCII digits only (``"²"``
    is a digit to Python, not to ``int``), at most `MAX_RETRY_COUNT`."""
    value = request.headers.get("x-stainless-retry-count", "0")
    if not (value.isascii() and value.isdigit()):
        return 0
    return min(int(value[:6]), MAX_RETRY_COUNT)


class Reporter:
    """Tells the event bus what became of one request, and remembers whether anything has
    been told: a request that ends without an outcome event (refused before admission)
    gets one at the end of `spendgate.pipeline.proxy.handle`, naming the key and the model
    asked for if they were known by then."""

    __slots__ = ("events", "forwarded", "key", "model", "reported", "request_id", "surface")

    def __init__(self, events: Events, request_id: str, surface: str) -> None:
        self.events = events
        self.request_id = request_id
        self.surface = surface
        self.reported = False
        self.forwarded = False  # an attempt went upstream: its row reports it, even if cancelled
        self.key: ApiKey | None = None
        self.model: str | None = None

    def outcome(self, event: Event) -> None:
        self.reported = True
        self.events.emit(event)

    def notice(self, event: Event) -> None:
        """An event around the request (a threshold crossed, a breaker opened)."""
        self.events.emit(event)
