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


class _MethodNotAllowed(InvalidRequest):
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
