"""The one place where errors become HTTP responses, in the caller's API dialect."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from spendgate.errors import Dialect, GatewayError, NotFound
from spendgate.pipeline.proxy import REQUEST_ID_KEY

log = logging.getLogger("spendgate.errors")

_ANTHROPIC_PREFIXES = ("/v1/messages",)


def dialect_of(request: web.Request) -> Dialect:
    path = request.path
    if path.startswith(_ANTHROPIC_PREFIXES):
        return Dialect.ANTHROPIC
    if path == "/v1/models" and "anthropic-version" in request.headers:
        return Dialect.ANTHROPIC
    return Dialect.OPENAI


def render(error: GatewayError, dialect: Dialect, request_id: str | None) -> web.Response:
    headers = error.headers()
    headers.update(error.dialect_headers.get(dialect, {}))
    if request_id:
        headers["x-spendgate-request-id"] = request_id
        if dialect is Dialect.ANTHROPIC:
            headers["request-id"] = request_id
        else:
            headers["x-request-id"] = request_id
    return web.Response(
        body=orjson.dumps(error.body(dialect, request_id)),
        status=error.status_for(dialect),
        headers=headers,
        content_type="application/json",
    )


class _Internal(GatewayError):
    status = 500
    retryable = True


class _MethodNotAllowed(GatewayError):
    status = 405
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


def _response_started(request: web.Request) -> bool:
    """Whether part of a response (a stream's headers or events) is already on the wire: no
    error response can follow it. Re-raised, aiohttp cuts the connection instead, which
    clients report as a broken stream rather than reading a status line as stream data."""
    return request.writer.output_size > 0


@web.middleware
async def error_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as error:
        if _response_started(request):
            raise
        return render(error, dialect_of(request), request.get(REQUEST_ID_KEY))
    except web.HTTPNotFound:
        missing = NotFound(f"No route for {request.method} {request.path} on this gateway.")
        return render(missing, dialect_of(request), None)
    except web.HTTPMethodNotAllowed:
        wrong = _MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
        return render(wrong, dialect_of(request), None)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error", extra={"path": request.path})
        if _response_started(request):
            raise
        internal = _Internal("spendgate hit an internal error; the request was not completed.")
        return render(internal, dialect_of(request), request.get(REQUEST_ID_KEY))
