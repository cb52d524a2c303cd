"""The one error hierarchy of spendgate.

Every refusal the gateway makes is a `GatewayError`. Each knows its HTTP status, whether
a client should retry it, and how it reads in each API dialect. They are turned into
responses in exactly one place (`spendgate.api.errors`).

    SpendgateError                      base of everything raised on purpose
    ├── ConfigError                     a bad config file: names the file and key path
    ├── StorageError                    the storage backend failed or is misconfigured
    └── GatewayError                    a refusal sent to an API client
        ├── InvalidRequest              400  malformed JSON, missing or wrongly typed field
        │   └── WrongDialect            400  model served by the other API dialect
        ├── AuthenticationFailed        401  missing, unknown, revoked or expired key
        ├── PermissionDenied            403  key may not use this model / admin only
        │   └── ModelNotPriced          403  unpriced model: refused, never counted as $0
        ├── NotFound                    404  unknown route
        │   └── ModelNotFound           404  model not in the model table
        ├── RequestTooLarge             413  body over the configured limit
        │   └── RequestCapExceeded      413  input tokens or worst-case cost over a per-request cap
        ├── BudgetExceeded          429/402  a hard budget cannot afford the request (OpenAI 429
        │                                    insufficient_quota, Anthropic 402 billing_error)
        ├── RateLimited                 429  a rate limit's window is full (retry-after <= 60 s,
        │                                    else x-should-retry: false)
        ├── LoopDetected                429  the same request repeated: non-retryable
        ├── CircuitOpen                 503  the upstream keeps failing for this key and model
        ├── UpstreamUnavailable         502  connection refused / reset before a response
        ├── UpstreamTimeout             504  no answer within the configured timeout
        └── ServiceUnavailable          503  draining or not ready

Non-retryable refusals carry ``x-should-retry: false``: the official SDKs and Claude Code
otherwise retry 401 and 429 (see shared/CLIENTS.md §9).
"""

from __future__ import annotations

from enum import Enum
from typing import ClassVar


class Dialect(Enum):
    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class SpendgateError(Exception):
    """Base of every error spendgate raises on purpose."""


class ConfigError(SpendgateError):
    def __init__(self, path: str, key: str, problem: str) -> None:
        self.path = path
        self.key = key
        self.problem = problem
        where = f"{path}: {key}" if key else path
        super().__init__(f"{where}: {problem}")


class StorageError(SpendgateError):
    pass


class GatewayError(SpendgateError):
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    openai_type: ClassVar[str] = "api_error"
    openai_code: ClassVar[str | None] = None
    anthropic_type: ClassVar[str] = "api_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.extra_headers = dict(headers or {})
        self.blocked_by: str | None = None  # set when a budget, limit or breaker refused
        self.dialect_headers: dict[Dialect, dict[str, str]] = {}  # e.g. rate-limit headers

    def status_for(self, dialect: Dialect) -> int:
        return self.status

    def headers(self) -> dict[str, str]:
        out = {"x-should-retry": "true" if self.retryable else "false"}
        out.update(self.extra_headers)
        return out

    def openai_body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.openai_code,
            }
        }

    def anthropic_body(self, request_id: str | None = None) -> dict[str, object]:
        body: dict[str, object] = {
            "type": "error",
            "error": {"type": self.anthropic_type, "message": self.message},
        }
        if request_id:
            body["request_id"] = request_id
        return body

    def body(self, dialect: Dialect, request_id: str | None = None) -> dict[str, object]:
        if dialect is Dialect.ANTHROPIC:
            return self.anthropic_body(request_id)
        return self.openai_body()


class InvalidRequest(GatewayError):
    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"


class AuthenticationFailed(GatewayError):
    status = 401
    openai_type = "invalid_request_error"
    openai_code = "invalid_api_key"
    anthropic_type = "authentication_error"


class PermissionDenied(GatewayError):
    status = 403
    openai_type = "permission_error"
    openai_code = "model_not_allowed"
    anthropic_type = "permission_error"


class ModelNotPriced(PermissionDenied):
    openai_code = "model_not_priced"


class NotFound(GatewayError):
    status = 404
    openai_type = "invalid_request_error"
    openai_code = "not_found"
    anthropic_type = "not_found_error"


class ModelNotFound(NotFound):
    openai_code = "model_not_found"


class WrongDialect(InvalidRequest):
    openai_code = "model_wrong_api"


class RequestTooLarge(GatewayError):
    status = 413
    openai_type = "invalid_request_error"
    openai_code = "request_too_large"
    anthropic_type = "request_too_large"


class BudgetExceeded(GatewayError):
    """A hard budget cannot afford even the smallest version of this request.

    OpenAI dialect: 429 ``insufficient_quota`` (Codex prints "Quota exceeded" and stops);
    Anthropic dialect: 402 ``billing_error`` (never 400: Claude Code replays a 400 five
    times). Both with ``x-should-retry: false``: waiting seconds cannot help.
    """

    status = 429
    openai_type = "insufficient_quota"
    openai_code = "insufficient_quota"
    anthropic_type = "billing_error"

    def status_for(self, dialect: Dialect) -> int:
        return 402 if dialect is Dialect.ANTHROPIC else 429


class RequestCapExceeded(RequestTooLarge):
    """One request is bigger or dearer than a per-request cap allows."""

    openai_code = "request_cap_exceeded"


MAX_RETRY_AFTER_S = 60  # longer waits are refused as non-retryable (CLIENTS.md §0.10)


def _wait_headers(wait_s: float) -> tuple[bool, dict[str, str]]:
    """``retry-after`` for a wait a client can sit out; ``x-should-retry: false`` beyond."""
    if wait_s > MAX_RETRY_AFTER_S:
        return False, {}
    millis = max(1, int(-(-round(wait_s * 1000, 3) // 1)))  # up: never before room appears
    return True, {"retry-after": str(max(1, -(-millis // 1000))), "retry-after-ms": str(millis)}


class _Wait(GatewayError):
    """A refusal that clears by itself in ``wait_s`` seconds: retryable with ``retry-after``
    when that is at most `MAX_RETRY_AFTER_S`, else ``x-should-retry: false``."""

    retryable = True

    def __init__(self, message: str, *, wait_s: float) -> None:
        self.can_retry, wait = _wait_headers(wait_s)
        super().__init__(message, headers=wait)
        self.wait_s = wait_s

    def headers(self) -> dict[str, str]:
        out = super().headers()
        out["x-should-retry"] = "true" if self.can_retry else "false"
        return out


class RateLimited(_Wait):
    """A rate limit's window is full; it will have room again in ``wait_s`` seconds."""

    status = 429
    openai_type = "requests"
    openai_code = "rate_limit_exceeded"
    anthropic_type = "rate_limit_error"

    def __init__(self, message: str, *, wait_s: float, tokens: bool = False) -> None:
        super().__init__(message, wait_s=wait_s)
        self.tokens = tokens

    def openai_body(self) -> dict[str, object]:
        body = super().openai_body()
        error = body["error"]
        assert isinstance(error, dict)
        error["type"] = "tokens" if self.tokens else "requests"
        return body


class LoopDetected(GatewayError):
    """The same request, again and again: an agent in a loop. Retrying cannot help."""

    status = 429
    openai_type = "requests"
    openai_code = "loop_detected"
    anthropic_type = "rate_limit_error"


class CircuitOpen(_Wait):
    """The upstream kept failing for this key and model: fail fast while it cools down."""

    status = 503
    openai_code = "circuit_open"
    anthropic_type = "overloaded_error"


class UpstreamUnavailable(GatewayError):
    status = 502
    retryable = True
    openai_code = "upstream_unavailable"


class UpstreamTimeout(GatewayError):
    status = 504
    retryable = True
    openai_code = "upstream_timeout"
    anthropic_type = "timeout_error"


class ServiceUnavailable(GatewayError):
    status = 503
    retryable = True
    openai_code = "service_unavailable"
    anthropic_type = "overloaded_error"
