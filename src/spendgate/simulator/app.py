"""The aiohttp application: routing, auth, fault injection and the ``/_sim`` control surface."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from . import (
    anthropic,
    background,
    conversations,
    gemini,
    openai_chat,
    openai_misc,
    openai_responses,
    records,
    wire,
)
from .context import Call
from .faults import parse_faults
from .options import SimulatorOptions
from .records import ERROR, RequestRecord
from .store import Store
from .streaming import abort_connection
from .validation import Problem, too_deep

Handler = Callable[[Call], Awaitable[web.StreamResponse]]
MAX_BODY_BYTES = 64 * 1024 * 1024
_OPENAI_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
_ANTHROPIC_NO_KEY = "x-api-key header is required"
_BAD_JSON = "We could not parse the JSON body of your request."
_TOO_DEEP = Problem("The request body is nested too deeply.")


@dataclass(slots=True)
class SimulatorState:
    """What one simulator app shares between requests."""

    options: SimulatorOptions
    records: list[RequestRecord] = field(default_factory=list)
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.store = Store(self.options.max_stored)

    def add(self, record: RequestRecord) -> None:
        if not self.options.record_requests:
            return
        self.records.append(record)
        excess = len(self.records) - self.options.max_records
        if excess > 0:
            del self.records[: excess + self.options.max_records // 10]


STATE_KEY = web.AppKey("spendgate_simulator_state", SimulatorState)


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _has_bearer(request: web.Request) -> bool:
    value = request.headers.get("authorization", "")
    return value[:7].lower() == "bearer " and bool(value[7:].strip())


def _authorized(request: web.Request, dialect: wire.Dialect) -> bool:
    if dialect is wire.Dialect.GEMINI:
        return bool(request.headers.get("x-goog-api-key", "").strip() or request.query.get("key"))
    if dialect is wire.Dialect.ANTHROPIC and request.headers.get("x-api-key", "").strip():
        return True
    if request.path.startswith("/openai/"):  # Azure OpenAI: the key in `api-key`
        return bool(request.headers.get("api-key", "").strip()) or _has_bearer(request)
    return _has_bearer(request)


def _new_record(request: web.Request, raw: bytes, body: Any) -> RequestRecord:
    return RequestRecord(
        method=request.method,
        path=request.path,
        query=request.query_string,
        headers={name.lower(): value for name, value in request.headers.items()},
        raw_body=raw,
        body=body,
        request_id=wire.new_id("req_"),
    )


async def _answer(call: Call, handler: Handler, needs_body: bool) -> web.StreamResponse:
    faults, options, request = call.faults, call.options, call.request
    delay_ms = options.first_byte_delay_ms if faults.delay_ms is None else faults.delay_ms
    if delay_ms:
        await asyncio.sleep(delay_ms / 1000.0)
    if options.require_auth and not _authorized(request, call.dialect):
        if call.dialect is wire.Dialect.GEMINI:
            return call.error(403)  # Google: PERMISSION_DENIED, "unregistered callers"
        no_key = _OPENAI_NO_KEY if call.dialect is wire.Dialect.OPENAI else _ANTHROPIC_NO_KEY
        return call.error(401, no_key)
    if faults.redirect is not None:
        call.record.status = 307
        call.record.finish(ERROR)
        headers = wire.headers_for(call.dialect, call.request_id, "text/plain")
        return web.Response(status=307, headers={**headers, "location": faults.redirect})
    if faults.status is not None and faults.status >= 400:
        return call.error(faults.status, error_type=faults.error_type)
    if needs_body and not isinstance(call.record.body, dict):
        return call.error(400, _BAD_JSON)
    if needs_body and too_deep(call.body, call.record.raw_body):
        return call.refuse(_TOO_DEEP)
    if faults.die_after_chunks is not None and not call.streaming:
        abort_connection(call)
        return web.Response()
    return await handler(call)


def _endpoint(
    handler: Handler, dialect: wire.Dialect | None, needs_body: bool = True
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Wrap an endpoint: record the request, apply auth and faults, notice cancellation.

    ``dialect`` None: Anthropic when the request carries ``anthropic-version``."""

    async def serve(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        raw = await request.read()
        body = _parse_json(raw)
        record = _new_record(request, raw, body)
        state.add(record)
        chosen = dialect
        if chosen is None:
            anthropic_like = "anthropic-version" in request.headers
            chosen = wire.Dialect.ANTHROPIC if anthropic_like else wire.Dialect.OPENAI
        fields = body if isinstance(body, dict) else {}
        faults = parse_faults(request.headers).for_model(fields.get("model"))
        call = Call(request, record, faults, state.options, chosen, fields, state.store)
        try:
            return await _answer(call, handler, needs_body)
        except asyncio.CancelledError:
            if not record.finished:
                record.finish(records.DISCONNECTED)
            raise

    return serve


async def _not_found(call: Call) -> web.StreamResponse:
    return call.error(404, f"Invalid URL ({call.request.method} {call.request.path})")


async def _websocket_refused(call: Call) -> web.StreamResponse:
    return call.error(426, "WebSocket transport is not supported; use POST /v1/responses.")


async def _records(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    body = orjson.dumps([record.to_json() for record in state.records])
    return web.Response(body=body, content_type="application/json")


async def _reset(request: web.Request) -> web.Response:
    """Forget the records and the stored responses and conversations."""
    state = request.app[STATE_KEY]
    state.records.clear()
    state.store.clear()
    return web.Response(body=b'{"ok":true}', content_type="application/json")


_NOT_FOUND = {dialect: _endpoint(_not_found, dialect, needs_body=False) for dialect in wire.Dialect}


async def _unknown(request: web.Request) -> web.StreamResponse:
    anthropic_like = request.path.startswith("/v1/messages")
    dialect = wire.Dialect.ANTHROPIC if anthropic_like else wire.Dialect.OPENAI
    if request.path.startswith("/v1beta/") or ":" in request.path:
        dialect = wire.Dialect.GEMINI
    return await _NOT_FOUND[dialect](request)


async def _stop_jobs(app: web.Application) -> None:
    app[STATE_KEY].store.cancel_jobs()


def _add_stateful_routes(app: web.Application) -> None:
    """Stored and background responses, conversations (`background`, `conversations`)."""
    openai = wire.Dialect.OPENAI
    one = "/v1/responses/{response_id}"
    app.router.add_get(one, _endpoint(background.retrieve, openai, needs_body=False))
    app.router.add_delete(one, _endpoint(background.delete, openai, needs_body=False))
    app.router.add_post(one + "/cancel", _endpoint(background.cancel, openai, needs_body=False))
    app.router.add_post("/v1/conversations", _endpoint(conversations.create, openai))
    conversation = "/v1/conversations/{conversation_id}"
    app.router.add_get(conversation, _endpoint(conversations.retrieve, openai, needs_body=False))
    app.router.add_post(conversation + "/items", _endpoint(conversations.add_items, openai))


def _add_azure_routes(app: web.Application) -> None:
    """Azure OpenAI's shapes: the v1 API under ``/openai/v1`` and deployment URLs
    (``/openai/deployments/{deployment}/chat/completions?api-version=...``), both
    authenticated by an ``api-key`` header. A deployment URL without ``api-version`` is a
    404, as on Azure; the model answered is the body's (Azure's would be the deployment's)."""
    openai = wire.Dialect.OPENAI
    chat = _endpoint(openai_chat.chat_completions, openai)
    responses = _endpoint(openai_responses.create_response, openai)
    embeddings = _endpoint(openai_misc.embeddings, openai)
    app.router.add_post("/openai/v1/chat/completions", chat)
    app.router.add_post("/openai/v1/responses", responses)
    app.router.add_post("/openai/v1/embeddings", embeddings)
    deployment = "/openai/deployments/{deployment}"
    app.router.add_post(deployment + "/chat/completions", _versioned(chat))
    app.router.add_post(deployment + "/embeddings", _versioned(embeddings))
    app.router.add_post("/openai/responses", _versioned(responses))


def _versioned(
    serve: Callable[[web.Request], Awaitable[web.StreamResponse]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def check(request: web.Request) -> web.StreamResponse:
        if not request.query.get("api-version"):
            return await _NOT_FOUND[wire.Dialect.OPENAI](request)
        return await serve(request)

    return check


def _add_gemini_routes(app: web.Application) -> None:
    """The Gemini API on ``/v1beta/`` and ``/v1/`` (`gemini`)."""
    google = wire.Dialect.GEMINI
    for version in ("/v1beta", "/v1"):
        base = version + "/models/{model}:"
        app.router.add_post(base + "generateContent", _endpoint(gemini.generate_content, google))
        stream = _endpoint(gemini.stream_generate_content, google)
        app.router.add_post(base + "streamGenerateContent", stream)
        app.router.add_post(base + "countTokens", _endpoint(gemini.count_tokens, google))


def create_simulator_app(options: SimulatorOptions | None = None) -> web.Application:
    """The fake provider as an aiohttp app (run it with `Simulator` or any aiohttp runner)."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE_KEY] = SimulatorState(options or SimulatorOptions())
    app.on_cleanup.append(_stop_jobs)
    openai, anthropic_ = wire.Dialect.OPENAI, wire.Dialect.ANTHROPIC
    app.router.add_post("/v1/chat/completions", _endpoint(openai_chat.chat_completions, openai))
    app.router.add_post("/v1/responses", _endpoint(openai_responses.create_response, openai))
    app.router.add_get("/v1/responses", _endpoint(_websocket_refused, openai, needs_body=False))
    app.router.add_post(
        "/v1/responses/input_tokens", _endpoint(openai_responses.input_tokens, openai)
    )
    _add_stateful_routes(app)
    app.router.add_post("/v1/embeddings", _endpoint(openai_misc.embeddings, openai))
    app.router.add_get("/v1/models", _endpoint(openai_misc.models, None, needs_body=False))
    app.router.add_post("/v1/messages", _endpoint(anthropic.messages, anthropic_))
    app.router.add_post("/v1/messages/count_tokens", _endpoint(anthropic.count_tokens, anthropic_))
    _add_azure_routes(app)
    _add_gemini_routes(app)
    app.router.add_get("/_sim/records", _records)
    app.router.add_post("/_sim/reset", _reset)
    app.router.add_route("*", "/{tail:.*}", _unknown)
    return app
