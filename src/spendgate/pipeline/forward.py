"""Sending one attempt upstream and relaying its answer: a stream event by event
(`spendgate.pipeline.relay`), a body whole (here). Every way out of the call writes the
attempt's row, except a call that never reached the provider (nothing was sent)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from spendgate.dialects import Prepared
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.models import ProviderKind
from spendgate.domain.usage import Usage
from spendgate.errors import (
    GatewayError,
    UpstreamCredentialRefused,
    UpstreamRedirected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from spendgate.events import BreakerClosed, BreakerOpened, UpstreamFailed
from spendgate.gateway import Gateway
from spendgate.money import dollars_text
from spendgate.pipeline.exchange import Exchange
from spendgate.pipeline.intake import REQUEST_ID_KEY
from spendgate.pipeline.outcome import COST_HEADER, answer_and_record, client_headers, record
from spendgate.pipeline.relay import relay_stream
from spendgate.pipeline.usage_check import believed
from spendgate.services.breakers import CircuitBreakers
from spendgate.upstream.client import (
    Broken,
    ConnectTimeout,
    ReadTimeout,
    Unreachable,
    UpstreamFailure,
    UpstreamResponse,
)

_UPSTREAM_ID_HEADERS = ("x-request-id", "request-id")

log = logging.getLogger("spendgate.upstream")


@dataclass(slots=True)
class Failed:
    """An attempt that failed before the client saw a byte: what the client gets if no
    fallback answers instead (the upstream's own error response, or a gateway error)."""

    error: GatewayError | None = None
    response: web.Response | None = None
    reached: bool = True  # False: it never reached the upstream (no connection, no row)
    request_id: str = ""  # the attempt's id, named in the answer

    def answer(self, request: web.Request) -> web.Response:
        request[REQUEST_ID_KEY] = self.request_id
        if self.response is not None:
            return self.response
        assert self.error is not None
        raise self.error


def breaker_key(exchange: Exchange) -> tuple[str, str]:
    return (exchange.key.id, exchange.route.name)


def breakers_of(gateway: Gateway, exchange: Exchange) -> CircuitBreakers | None:
    """The breakers that watch this request: none for a free call (token counting). It
    costs nothing when it fails, and its upstream endpoint is rate-limited apart from the
    model's (a count's ``429`` says nothing of Messages, and its answer proves nothing of
    them: it must neither trip the model's breaker, nor reset its count, nor be its probe)."""
    return gateway.breakers if exchange.spec.billed else None


async def breaker_outcome(gateway: Gateway, exchange: Exchange, ok: bool | None) -> None:
    """``ok`` None: no answer either way (the client left); a probe is given up."""
    breakers = breakers_of(gateway, exchange)
    if breakers is None:
        return
    key = breaker_key(exchange)
    if ok is None:
        await breakers.abandon(key)
        return
    opened, closed = await breakers.record(key, ok=ok)
    if opened:
        event = BreakerOpened(key[0], key[1], breakers.threshold, breakers.cooldown_s)
        exchange.reporter.notice(event)
    elif closed:  # an answer closed an open breaker (a probe's, or one sent before)
        exchange.reporter.notice(BreakerClosed(key[0], key[1]))


async def forward(
    gateway: Gateway, request: web.Request, exchange: Exchange, prepared: Prepared
) -> web.StreamResponse | Failed:
    """Send the request upstream and relay the answer. A failure before the client has seen
    a byte (unreachable, timeout, 429, 5xx) comes back as `Failed`, for a fallback to take
    over; once a stream's first byte is relayed, there is no going back."""
    exchange.reporter.forwarded = True
    framing = exchange.spec.framing_for(request.query)
    if framing is not None:
        prepared = dataclasses.replace(prepared, framing=framing)
    sent = gateway.clock.monotonic()
    try:
        upstream = await gateway.upstream.send(
            exchange.provider,
            exchange.spec.upstream_path(request.path),
            prepared.body,
            request.headers,
            query=request.query_string,
            model=exchange.deployment.upstream_model,
        )
    except asyncio.CancelledError:
        await asyncio.shield(breaker_outcome(gateway, exchange, None))
        await record(gateway, exchange, lost(gateway, exchange, 499, "client disconnected", True))
        raise
    except UpstreamFailure as failure:
        exchange.upstream_s += gateway.clock.monotonic() - sent
        await breaker_outcome(gateway, exchange, False)
        return await _unanswered(gateway, exchange, failure)
    head = gateway.clock.monotonic()
    exchange.upstream_s += head - sent
    exchange.mark_first_byte(head)
    exchange.upstream_request_id = _upstream_id(upstream.headers)
    exchange.tier_reported = exchange.spec.tier_reported(upstream.headers)
    failing = upstream.status >= 500 or upstream.status == 429
    await breaker_outcome(gateway, exchange, not failing)
    try:
        # An answer framed as a stream is metered as one, whatever the request said.
        if upstream.status == 200 and _is_stream(exchange, prepared, upstream):
            exchange.stream = True
            return await relay_stream(gateway, request, exchange, prepared, upstream)
        if failing:
            return Failed(response=await _relay_body(gateway, exchange, upstream))
        if 300 <= upstream.status < 400:
            await _relay_body(gateway, exchange, upstream)  # its row; the answer is not relayed
            raise _misconfigured(exchange, upstream.status)
        return await _relay_body(gateway, exchange, upstream, request)
    finally:
        upstream.release()


async def _unanswered(gateway: Gateway, exchange: Exchange, failure: UpstreamFailure) -> Failed:
    """No answer from the provider. Nothing was sent when it could not be reached (no row);
    otherwise it may have billed: the estimated input is charged."""
    name = exchange.provider.name
    if isinstance(failure, Unreachable | ConnectTimeout):
        exchange.reporter.outcome(
            UpstreamFailed(
                exchange.request_id,
                name,
                exchange.route.name,
                502,
                str(failure),
                None,
                key=exchange.key,
                surface=exchange.spec.surface.value,
                requested_model=exchange.requested_model,
            )
        )
        # The client is told why in general terms; the log line above has the address.
        why = failure.reason if isinstance(failure, Unreachable) else str(failure)
        return Failed(
            error=UpstreamUnavailable(
                f"The upstream provider '{name}' could not be reached: {why}."
            ),
            reached=False,
        )
    if isinstance(failure, ReadTimeout):
        await record(gateway, exchange, lost(gateway, exchange, 504, "upstream timeout"))
        return Failed(
            error=UpstreamTimeout(f"The upstream provider '{name}' did not answer in time.")
        )
    await record(gateway, exchange, lost(gateway, exchange, 502, str(failure)))
    return Failed(
        error=UpstreamUnavailable(
            f"The connection to the upstream provider '{name}' broke before it answered."
        )
    )


def _misconfigured(exchange: Exchange, status: int) -> GatewayError:
    """A provider's ``401`` is about spendgate's key for it, not the caller's: relayed, it
    told the client its own key was wrong (Claude Code asks to log in again) and showed it
    what the provider says of the operator's key (OpenAI: its last characters). A redirect
    is not followed, nor relayed (the client would follow it with its own key)."""
    name = exchange.provider.name
    extra = {"provider": name, "status": status, "request_id": exchange.request_id}
    if not 300 <= status < 400:
        log.error("the provider refused the gateway's credential", extra=extra)
        return UpstreamCredentialRefused(
            f"The upstream provider '{name}' refused spendgate's credential for it (HTTP "
            f"{status}). Your key was accepted; the gateway's operator must fix the provider's "
            f"key (providers.{name}). Nothing was charged."
        )
    log.error("the provider answered with a redirect, which is not followed", extra=extra)
    return UpstreamRedirected(
        f"The upstream provider '{name}' answered with a redirect (HTTP {status}), which "
        f"spendgate does not follow; the gateway's operator must check providers.{name}"
        ".base_url. Nothing was charged."
    )


def _refuses_credential(exchange: Exchange, status: int, payload: bytes) -> bool:
    """Whether the provider's answer refuses spendgate's key for it: any ``401``; Gemini
    says so in a ``400`` or ``403`` whose ``ErrorInfo`` reason is ``API_KEY_INVALID``,
    ``API_KEY_EXPIRED``, ... (it answers an invalid key ``400 INVALID_ARGUMENT``)."""
    if status == 401:
        return True
    if status not in (400, 403) or exchange.provider.kind is not ProviderKind.GEMINI:
        return False
    try:
        error = orjson.loads(payload).get("error")
        details = error.get("details") or []
        return any(str(d.get("reason", "")).startswith("API_KEY_") for d in details)
    except (orjson.JSONDecodeError, AttributeError, TypeError):  # not Google's error shape
        return False


def _is_stream(exchange: Exchange, prepared: Prepared, upstream: UpstreamResponse) -> bool:
    framing = prepared.framing or exchange.provider.framing
    return upstream.content_type == framing.content_type


def _upstream_id(headers: Any) -> str | None:
    for name in _UPSTREAM_ID_HEADERS:
        value = headers.get(name)
        if value:
            return str(value)
    return None


def lost(
    gateway: Gateway, exchange: Exchange, status: int, error: str, disconnected: bool = False
) -> LedgerRow:
    """A request that reached the upstream but got no usable answer: charge the estimated input."""
    return exchange.row(
        now=gateway.clock.monotonic(),
        usage=exchange.estimate(),
        status=status,
        client_disconnected=disconnected,
        error=error,
    )


async def _relay_body(
    gateway: Gateway,
    exchange: Exchange,
    upstream: UpstreamResponse,
    request: web.Request | None = None,
) -> web.Response:
    """The upstream's answer, whole, and its ledger row. With a ``request`` the answer is
    final (no fallback can replace it) and is sent here, in the order `answer_and_record`
    chooses; without one the row is written and the caller decides what to send."""
    reading = gateway.clock.monotonic()
    try:
        payload = await upstream.read()
    except asyncio.CancelledError:
        await record(gateway, exchange, lost(gateway, exchange, 499, "client disconnected", True))
        raise
    except ReadTimeout:
        await record(gateway, exchange, lost(gateway, exchange, 504, "upstream timeout"))
        raise UpstreamTimeout("The upstream provider stopped sending its answer.") from None
    except Broken:
        await record(gateway, exchange, lost(gateway, exchange, 502, "upstream broke mid-body"))
        raise UpstreamUnavailable("The upstream provider broke off its answer.") from None
    exchange.upstream_s += gateway.clock.monotonic() - reading
    usage, served, error, problem = _body_usage(exchange, upstream.status, payload)
    row = exchange.row(
        now=gateway.clock.monotonic(),
        usage=usage,
        status=upstream.status,
        served_model=served,
        error=error,
        usage_problem=problem,
    )
    if request is not None and _refuses_credential(exchange, upstream.status, payload):
        await record(gateway, exchange, row)  # its row; the answer is not relayed
        raise _misconfigured(exchange, upstream.status)
    if exchange.ends_turn_at_clamp:  # a clamped agent's ceiling stop ends its turn
        payload = exchange.spec.end_turn(payload)
    response = web.Response(
        body=payload, status=upstream.status, headers=client_headers(exchange, upstream)
    )
    response.headers[COST_HEADER] = dollars_text(row.cost_nanos)  # its dollars
    if request is None:
        await record(gateway, exchange, row)
        return response

    async def answer() -> None:
        try:
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:  # aiohttp.ClientConnectionResetError too (a subclass)
            pass  # the client hung up; the row is written all the same

    await answer_and_record(gateway, exchange, row, answer)
    return response


def _body_usage(
    exchange: Exchange, status: int, payload: bytes
) -> tuple[Usage, str | None, str | None, str | None]:
    """The usage to charge, the model that served, the upstream's error, and what was
    wrong with the usage it reported (None: believed)."""
    try:
        parsed = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        parsed = None
    document = parsed if isinstance(parsed, dict) else {}
    served = document.get("model") if isinstance(document.get("model"), str) else None
    if status >= 300:  # a refusal, or a redirect not followed: nothing billed
        return Usage(), served, _upstream_error_text(document, status), None
    reported, problem = exchange.spec.usage_of(document)
    text = exchange.spec.response_text(document) if reported is None else ""
    usage, problem = believed(exchange, reported, problem, text)
    if problem is not None and reported is not None:  # implausible: estimate from the text
        usage, _ = believed(exchange, None, problem, exchange.spec.response_text(document))
    return usage, served, None, problem


def _upstream_error_text(document: dict[str, Any], status: int) -> str:
    error = document.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or ""
        return f"upstream {status}: {redact_quotes(str(message))[:300]}"
    return f"upstream {status}"


_QUOTED = re.compile(r"'[^']{9,}'|\"[^\"]{9,}\"")


def redact_quotes(message: str) -> str:
    """A provider's error message as kept in the ledger and the access log: text it quotes
    (OpenAI's "Invalid value: '<what the client sent>'") beyond 8 characters becomes '…',
    since prompts are not stored; the client still gets the provider's full message."""
    return _QUOTED.sub("'…'", message)
