"""Bytes on the wire: ids, response headers, JSON bodies, SSE events and error bodies."""

from __future__ import annotations

import os
import time
from enum import Enum
from typing import Any

import orjson
from aiohttp import web


class Dialect(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"
    GEMINI = "gemini"


JSON_TYPE = "application/json"
SSE_TYPE = "text/event-stream; charset=utf-8"

_OPENAI_HEADERS: dict[str, str] = {
    "openai-version": "2020-10-01",
    "openai-organization": "org-simulator",
    "openai-processing-ms": "1",
    "x-ratelimit-limit-requests": "5000",
    "x-ratelimit-remaining-requests": "4999",
    "x-ratelimit-reset-requests": "12ms",
    "x-ratelimit-limit-tokens": "160000",
    "x-ratelimit-remaining-tokens": "159976",
    "x-ratelimit-reset-tokens": "9ms",
}
_ANTHROPIC_HEADERS: dict[str, str] = {
    "anthropic-organization-id": "00000000-0000-4000-8000-000000000000",
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-tokens-limit": "96000",
    "anthropic-ratelimit-tokens-remaining": "96000",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "80000",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "16000",
}
_GEMINI_HEADERS: dict[str, str] = {"server-timing": "gfet4t7; dur=1", "vary": "Origin"}
_REQUEST_ID_HEADER = {
    Dialect.OPENAI: "x-request-id",
    Dialect.ANTHROPIC: "request-id",
    Dialect.GEMINI: "x-gemini-request-id",  # Google sends none; a simulator aid
}
_STATIC_HEADERS = {
    Dialect.OPENAI: _OPENAI_HEADERS,
    Dialect.ANTHROPIC: _ANTHROPIC_HEADERS,
    Dialect.GEMINI: _GEMINI_HEADERS,
}

_OPENAI_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request (simulated)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided (simulated)."),
    403: ("invalid_request_error", "unsupported_country_region_territory", "Forbidden."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist (simulated)."),
    429: (
        "requests",
        "rate_limit_exceeded",
        "Rate limit reached on requests per min (RPM): Limit 3, Used 3, Requested 1. "
        "Please try again in 1s. (simulated)",
    ),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The server is overloaded or not ready yet."),
}
_ANTHROPIC_ERRORS: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_ANTHROPIC_MESSAGES: dict[str, str] = {
    "authentication_error": "invalid x-api-key",
    "rate_limit_error": "Number of request tokens has exceeded your per-minute rate limit",
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
}


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def now() -> int:
    return int(time.time())


def headers_for(dialect: Dialect, request_id: str, content_type: str) -> dict[str, str]:
    headers = dict(_STATIC_HEADERS[dialect])
    headers[_REQUEST_ID_HEADER[dialect]] = request_id
    headers["content-type"] = content_type
    return headers


def json_response(
    payload: object, dialect: Dialect, request_id: str, status: int = 200
) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload),
        status=status,
        headers=headers_for(dialect, request_id, JSON_TYPE),
    )


def data_event(payload: object) -> bytes:
    """An SSE event with only a ``data:`` line (OpenAI chat)."""
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def named_event(name: str, payload: object) -> bytes:
    """An SSE event with ``event:`` and ``data:`` lines (Responses API, Anthropic)."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


DONE_EVENT = b"data: [DONE]\n\n"


def responses_error_event(sent: int) -> bytes:
    """The Responses API's mid-stream ``error`` event after ``sent`` events."""
    return named_event(
        "error",
        {
            "type": "error",
            "code": "server_error",
            "message": "The server had an error while processing your request. (simulated)",
            "param": None,
            "sequence_number": sent,
        },
    )


def openai_error_body(
    status: int,
    message: str | None = None,
    error_type: str | None = None,
    *,
    param: str | None = None,
    code: str | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope; a specific ``message`` carries only the ``code`` given."""
    default_type, default_code, default_message = _OPENAI_ERRORS.get(
        status,
        ("server_error" if status >= 500 else "invalid_request_error", None, "Simulated error."),
    )
    kind = error_type or default_type
    if message is None:
        code = default_code
    if error_type == "insufficient_quota":
        code = "insufficient_quota"
    return {
        "error": {
            "message": message or default_message,
            "type": kind,
            "param": param,
            "code": code,
        }
    }


def anthropic_error_body(
    status: int, request_id: str, message: str | None = None, error_type: str | None = None
) -> dict[str, Any]:
    default = _ANTHROPIC_ERRORS.get(
        status, "api_error" if status >= 500 else "invalid_request_error"
    )
    kind = error_type or default
    text = message or _ANTHROPIC_MESSAGES.get(kind, f"Simulated {kind}.")
    return {"type": "error", "error": {"type": kind, "message": text}, "request_id": request_id}


# HTTP status -> (gRPC status, Google's message) of the Gemini API's errors.
_GEMINI_ERRORS: dict[int, tuple[str, str]] = {
    400: ("INVALID_ARGUMENT", "Request contains an invalid argument."),
    401: ("UNAUTHENTICATED", "Request had invalid authentication credentials."),
    403: (
        "PERMISSION_DENIED",
        "Method doesn't allow unregistered callers (callers without "
        "established identity). Please use API Key or other form of API consumer identity "
        "to call this API.",
    ),
    404: ("NOT_FOUND", "models/unknown is not found for API version v1beta."),
    429: (
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. (simulated)",
    ),
    500: ("INTERNAL", "An internal error has occurred. (simulated)"),
    503: ("UNAVAILABLE", "The model is overloaded. Please try again later. (simulated)"),
    504: ("DEADLINE_EXCEEDED", "Deadline expired before operation could complete."),
}


def gemini_error_body(
    status: int, message: str | None = None, error_type: str | None = None, retry_after_s: int = 1
) -> dict[str, Any]:
    """``{"error": {"code", "message", "status"}}``; a 429 has a ``RetryInfo`` detail. An
    ``error_type`` naming a key problem (``API_KEY_INVALID``, ``API_KEY_EXPIRED``) is an
    ``ErrorInfo`` detail with that reason, as Google answers a key it refuses (400)."""
    if error_type is not None and error_type.startswith("API_KEY_"):
        return _gemini_key_refused(status, error_type)
    default = _GEMINI_ERRORS.get(
        status, ("INTERNAL" if status >= 500 else "INVALID_ARGUMENT", "Simulated error.")
    )
    inner: dict[str, Any] = {
        "code": status,
        "message": message or default[1],
        "status": error_type or default[0],
    }
    if status == 429:
        inner["details"] = [
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{retry_after_s}s"}
        ]
    return {"error": inner}


def error_response(
    dialect: Dialect,
    status: int,
    request_id: str,
    *,
    message: str | None = None,
    error_type: str | None = None,
    retry_after_s: int = 1,
    param: str | None = None,
    code: str | None = None,
) -> web.Response:
    """An error answer exactly shaped like the provider's (CLIENTS.md §5.1, §6.4, §7).

    ``param`` and ``code`` only exist in the OpenAI dialect."""
    if dialect is Dialect.OPENAI:
        body = openai_error_body(status, message, error_type, param=param, code=code)
    elif dialect is Dialect.GEMINI:
        body = gemini_error_body(status, message, error_type, retry_after_s)
    else:
        body = anthropic_error_body(status, request_id, message, error_type)
    response = json_response(body, dialect, request_id, status)
    if status == 429:
        response.headers["retry-after"] = str(retry_after_s)
    return response


def _gemini_key_refused(status: int, reason: str) -> dict[str, Any]:
    message = (
        "API key expired. Please renew the API key."
        if reason == "API_KEY_EXPIRED"
        else "API key not valid. Please pass a valid API key."
    )
    info = {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": "generativelanguage.googleapis.com"},
    }
    localized = {
        "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
        "locale": "en-US",
        "message": message,
    }
    status_name = "PERMISSION_DENIED" if status == 403 else "INVALID_ARGUMENT"
    return {
        "error": {
            "code": status,
            "message": message,
            "status": status_name,
            "details": [info, localized],
        }
    }
