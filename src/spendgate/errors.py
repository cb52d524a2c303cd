"""The one error hierarchy of spendgate.

Every refusal the gateway makes is a `GatewayError`: data about what went wrong (a message,
the field at fault, a machine-readable ``code``, the HTTP status it usually maps to,
whether and when a retry can help, and for a refusal by a budget, limit or breaker, which
one). Errors do not render themselves: each API dialect renders them in its own shape
(`spendgate.dialects`), and they become responses in exactly one place
(`spendgate.api.errors`).

    SpendgateError                      base of everything raised on purpose
    ├── ConfigError                     a bad config file: names the file and key path
    ├── StorageError                    the storage backend failed or is misconfigured
    └── GatewayError                    a refusal sent to an API client
        ├── InvalidRequest              400  malformed JSON, missing or wrongly typed field
        │   └── WrongDialect            400  model served by the other API dialect
        ├── AuthenticationFailed        401  missing, unknown, revoked or expired key
        ├── PermissionDenied            403  key may not use this model / admin only
        │   ├── ModelNotPriced          403  unpriced model: refused, never counted as $0
        │   └── AccessDenied            403  an admin token's role or team does not allow it
        ├── NotFound                    404  unknown route
        │   └── ModelNotFound           404  model not in the model table
        ├── RequestTooLarge             413  body over the configured limit
        │   └── RequestCapExceeded      413  input tokens or worst-case cost over a per-request cap
        ├── BudgetExceeded          429/402  a hard budget cannot afford the request (OpenAI 429
        │                                    insufficient_quota, Anthropic 402 billing_error)
        ├── RateLimited                 429  a rate limit's window is full (retry-after <= 60 s,
        │                                    else x-should-retry: false)
        ├── BudgetBusy                  429  a budget's room is held by requests in flight:
        │                                    retryable once they settle
        ├── LoopDetected                429  the same request repeated: non-retryable
        ├── CircuitOpen             503/529  the upstream keeps failing for this key and model:
        │                                    x-should-retry: false (Anthropic 529 overloaded)
        ├── UpstreamUnavailable         502  connection refused / reset before a response
        │   ├── UpstreamCredentialRefused 502  the provider refused spendgate's key for it
        │   └── UpstreamRedirected      502  the provider answered a redirect: not followed
        ├── UpstreamTimeout             504  no answer within the configured timeout
        ├── ServiceUnavailable          503  draining or not ready
        └── StorageUnavailable          503  storage cannot record the request: refused before
                                             any provider call (the outage policy)

Non-retryable refusals carry ``x-should-retry: false``: the official SDKs and Claude Code
otherwise retry 401 and 429 (see shared/CLIENTS.md §9).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Literal


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


class SchemaTooNew(StorageError):
    """The database was migrated by a newer spendgate: this version must not write to it."""


@dataclass(frozen=True, slots=True)
class RateWindow:
    """A rate limit as a client sees it: how much of it is left and when it frees up."""

    kind: Literal["requests", "tokens"]
    limit: int
    remaining: int
    resets_at: datetime
    now: datetime


class GatewayError(SpendgateError):
    status: ClassVar[int] = 500  # the HTTP status (a dialect may map a few differently)
    retryable: ClassVar[bool] = False
    code: ClassVar[str | None] = None  # machine-readable, the same in every dialect

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
        blocked_by: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.extra_headers = dict(headers or {})
        self.blocked_by = blocked_by  # the budget, limit or breaker that refused

    def headers(self) -> dict[str, str]:
        """Whether (and when) a retry can help: the same in every dialect."""
        out = {"x-should-retry": "true" if self.retryable else "false"}
        out.update(self.extra_headers)
        return out


class InvalidRequest(GatewayError):
    status = 400


class RequestTimeout(InvalidRequest):
    """The request body did not arrive within `server.request_body_timeout_s`."""

    status = 408
    code = "request_timeout"


class UnsupportedEncoding(InvalidRequest):
    """A request body compressed with a content-encoding this gateway does not read."""

    status = 415
    code = "unsupported_content_encoding"


class AuthenticationFailed(GatewayError):
    status = 401
    code = "invalid_api_key"


class PermissionDenied(GatewayError):
    status = 403
    code = "model_not_allowed"


class ModelNotPriced(PermissionDenied):
    code = "model_not_priced"


class AccessDenied(PermissionDenied):
    """An admin credential whose role or team does not allow this route or this change
    (`spendgate.domain.roles`)."""

    code = "permission_denied"


class NotFound(GatewayError):
    status = 404
    code = "not_found"


class ModelNotFound(NotFound):
    code = "model_not_found"


class WrongDialect(InvalidRequest):
    code = "model_wrong_api"


class RequestTooLarge(GatewayError):
    status = 413
    code = "request_too_large"


# How a refusal as over budget begins (its ledger row keeps the message): the budget states
# (`spendgate.domain.budget_state`) tell it from a refusal while room is held.
BUDGET_EXHAUSTED = "Budget exhausted for "


class BudgetExceeded(GatewayError):
    """A hard budget cannot afford even the smallest version of this request.

    OpenAI dialect: 429 ``insufficient_quota`` (Codex prints "Quota exceeded" and stops);
    Anthropic dialect: 402 ``billing_error`` (never 400: Claude Code replays a 400 five
    times). Both with ``x-should-retry: false``: waiting seconds cannot help.
    """

    status = 429
    code = "insufficient_quota"


class RequestCapExceeded(RequestTooLarge):
    """One request is bigger or dearer than a per-request cap allows."""

    code = "request_cap_exceeded"


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

    def __init__(self, message: str, *, wait_s: float, blocked_by: str | None = None) -> None:
        self.can_retry, wait = _wait_headers(wait_s)
        super().__init__(message, headers=wait, blocked_by=blocked_by)
        self.wait_s = wait_s

    def headers(self) -> dict[str, str]:
        out = super().headers()
        out["x-should-retry"] = "true" if self.can_retry else "false"
        return out


class RateLimited(_Wait):
    """A rate limit's window is full; it will have room again in ``wait_s`` seconds.
    ``window``: the limit that refused, for the dialect's rate-limit headers."""

    status = 429
    code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        wait_s: float,
        tokens: bool = False,
        window: RateWindow | None = None,
        blocked_by: str | None = None,
    ) -> None:
        super().__init__(message, wait_s=wait_s, blocked_by=blocked_by)
        self.tokens = tokens
        self.window = window


class BudgetBusy(_Wait):
    """A budget has room, but requests in flight hold it (their worst cases are reserved
    until they settle): retryable, once they have."""

    status = 429
    code = "rate_limit_exceeded"


class LoopDetected(GatewayError):
    """The same request, again and again: an agent in a loop. Retrying cannot help."""

    status = 429
    code = "loop_detected"


class CircuitOpen(_Wait):
    """The upstream kept failing for this key and model: fail fast while it cools down.

    Not retryable (``x-should-retry: false``), so a client stops at once and shows the
    message: agents' own backoff outlasts a cool-down (Claude Code's ~38 s against 30 s), so
    a retry the client schedules is a probe, and Codex sat out 372 s and 31 requests on
    ``retry-after: 30`` with ``x-should-retry: true`` (CLIENTS.md §12.6). ``retry-after``
    still says what is left of the cool-down (not the whole of it), for a client that
    ignores ``x-should-retry``: it comes back just as the breaker lets a probe through."""

    status = 503  # 529 overloaded_error in the Anthropic dialect
    code = "circuit_open"
    retryable = False

    def headers(self) -> dict[str, str]:
        out = super().headers()
        out["x-should-retry"] = "false"
        return out


class UpstreamUnavailable(GatewayError):
    status = 502
    retryable = True
    code = "upstream_unavailable"


class UpstreamCredentialRefused(UpstreamUnavailable):
    """The provider refused spendgate's own credential for it (its ``401``): the caller's
    key was accepted, the operator must fix the provider's; a retry cannot help."""

    retryable = False
    code = "upstream_auth_failed"


class UpstreamRedirected(UpstreamUnavailable):
    """The provider answered with a redirect (``3xx``), which spendgate does not follow
    (it would carry the provider's key and the prompt to another host), nor relay (the
    client would follow it with its spendgate key): its ``base_url`` needs fixing."""

    retryable = False
    code = "upstream_redirect"


class UpstreamTimeout(GatewayError):
    status = 504
    retryable = True
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    status = 503
    retryable = True
    code = "service_unavailable"


class StorageUnavailable(_Wait):
    """Storage could not take the write that must come before a provider call (or answer
    the read that decides one): the request is refused, never sent unmetered. Retryable
    after a short wait; `spendgate.pipeline` applies this policy in one place."""

    status = 503
    code = "storage_unavailable"
