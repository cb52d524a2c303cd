"""The one place where errors become HTTP responses, rendered by the caller's dialect."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web

from spendgate import dialects
from spendgate.dialects import DialectAdapter
from spendgate.errors import GatewayError, InvalidRequest, NotFound, StorageError
from spendgate.pipeline.intake import REQUEST_ID_KEY
from spendgate.pipeline.outage import storage_refusal

log = logging.getLogger("spendgate.errors")


def dialect_of(request: web.Request) -> DialectAdapter:
    return dialects.for_request(request.path, request.headers)


def render(error: GatewayError, adapter: DialectAdapter, request_id: str | None) -> web.Response:
    return web.Response(
        body=orjson.dumps(adapter.error_body(error, request_id)),
        status=adapter.error_status(error),
        headers=adapter.error_headers(error, request_id),
        content_type="application/json",
    )


class _Internal(GatewayError):
    status = 500
    retryable = True


class MethodNotAllowed(InvalidRequest):
    status = 405


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
    except StorageError as error:
        log.error("storage failed", extra={"path": request.path, "error": str(error)})
        if _response_started(request):
            raise
        return render(storage_refusal(), dialect_of(request), request.get(REQUEST_ID_KEY))
    except web.HTTPNotFound:
        hint = await _base_url_hint(request)
        missing = NotFound(f"No route for {request.method} {request.path} on this gateway.{hint}")
        return render(missing, dialect_of(request), None)
    except web.HTTPMethodNotAllowed:
        wrong = MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
        return render(wrong, dialect_of(request), None)
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unexpected error", extra={"path": request.path})
        if _response_started(request):
            raise
        internal = _Internal("spendgate hit an internal error; the request was not completed.")
        return render(internal, dialect_of(request), request.get(REQUEST_ID_KEY))


async def _base_url_hint(request: web.Request) -> str:
    """The commonest first-hour mistake, named: a client whose base URL lacks ``/v1`` (an
    OpenAI SDK pointed at the host: ``/chat/completions``) or has it once too often (an
    Anthropic SDK or Claude Code pointed at ``.../v1``: ``/v1/v1/messages``), where the
    path with ``/v1`` put right is a route of this gateway."""
    path = request.path
    if path.startswith("/v1/v1/"):
        meant = path.removeprefix("/v1")
    elif path.startswith("/") and not path.startswith(("/v1/", "/v1beta/")):
        meant = "/v1" + path
    else:
        return ""
    match = await request.app.router.resolve(request.clone(rel_url=meant))
    if match.http_exception is not None:
        return ""
    return (
        f" Did you mean {meant}? Check the client's base URL: an OpenAI client's ends in /v1, "
        "an Anthropic client's (and Claude Code's) is the gateway's address without /v1."
    )


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """Every answer (relayed, streamed, an error, a page) says ``Server: spendgate`` (not
    aiohttp's name and version) and ``x-content-type-options: nosniff``: provider answers
    share the dashboard's origin, so a browser must not sniff them into HTML."""
    response.headers["Server"] = "spendgate"
    response.headers.setdefault("x-content-type-options", "nosniff")
