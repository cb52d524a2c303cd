"""The request path: authenticate, resolve the model, forward, relay, meter, record.

Ordering rule: a response's last byte (the whole body, or a stream's terminal event) is
sent only after its ledger row is durable, so ``kill -9`` cannot lose the spend of a
request the client saw complete. Requests that never reached an upstream leave no row.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.usage import Usage
from spendgate.errors import InvalidRequest, RequestTooLarge, UpstreamTimeout, UpstreamUnavailable
from spendgate.gateway import Gateway
from spendgate.pipeline.exchange import Exchange, cut_short, new_request_id
from spendgate.pipeline.meters import Action, StreamMeter
from spendgate.pipeline.surfaces import Prepared, SurfaceSpec, response_text
from spendgate.upstream.providers import response_headers
from spendgate.upstream.sse import EventSplitter

log = logging.getLogger("spendgate.access")

REQUEST_ID_HEADER = "x-spendgate-request-id"
_UPSTREAM_ID_HEADERS = ("x-request-id", "request-id")
_BROKEN_UPSTREAM = (
    aiohttp.ClientPayloadError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
)


def credential(request: web.Request) -> str | None:
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return request.headers.get("x-api-key") or None


async def read_json_object(request: web.Request, limit: int) -> tuple[bytes, dict[str, Any]]:
    if request.content_length is not None and request.content_length > limit:
        raise _too_large(request.content_length, limit)
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise _too_large(None, limit) from None
    if not raw:
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return raw, body


def _too_large(size: int | None, limit: int) -> RequestTooLarge:
    got = f" ({size} bytes)" if size is not None else ""
    return RequestTooLarge(f"The request body{got} exceeds this gateway's limit of {limit} bytes.")


def require_model(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("The request needs a 'model' (a non-empty string).", param="model")
    return model


async def handle(gateway: Gateway, request: web.Request, spec: SurfaceSpec) -> web.StreamResponse:
    started = gateway.clock.monotonic()
    arrived = gateway.clock.now()
    request_id = new_request_id()
    request[REQUEST_ID_HEADER] = request_id
    key = await gateway.keys.authenticate(credential(request))
    raw, body = await read_json_object(request, gateway.config.server.max_body_bytes)
    route = gateway.models.resolve(require_model(body), spec.dialect)
    price = gateway.models.authorize(route, key, needs_price=spec.billed)
    deployment = route.primary
    exchange = Exchange(
        request_id=request_id,
        arrived=arrived,
        started=started,
        spec=spec,
        key=key,
        org=gateway.config.org_of_team(key.team) or key.org,
        route=route,
        deployment=deployment,
        price=price,
        body=body,
    )
    prepared = spec.prepare(raw, body, deployment.upstream_model)
    exchange.stream = prepared.stream
    return await _forward(gateway, request, exchange, prepared)


async def _forward(
    gateway: Gateway, request: web.Request, exchange: Exchange, prepared: Prepared
) -> web.StreamResponse:
    provider = gateway.providers[exchange.deployment.provider]
    url = provider.url_for(exchange.spec.path, request.query_string)
    headers = provider.request_headers(request.headers)
    try:
        upstream = await gateway.session().post(url, data=prepared.body, headers=headers)
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamUnavailable(
            f"The upstream provider '{provider.name}' could not be reached: {exc.os_error}."
        ) from None
    except asyncio.CancelledError:
        await _record(gateway, _lost(gateway, exchange, 499, "client disconnected", True))
        raise
    except TimeoutError:
        await _record(gateway, _lost(gateway, exchange, 504, "upstream timeout"))
        raise UpstreamTimeout(
            f"The upstream provider '{provider.name}' did not answer in time."
        ) from None
    except _BROKEN_UPSTREAM as exc:
        await _record(gateway, _lost(gateway, exchange, 502, f"upstream broke: {exc}"))
        raise UpstreamUnavailable(
            f"The connection to the upstream provider '{provider.name}' broke before it answered."
        ) from None
    exchange.mark_first_byte(gateway.clock.monotonic())
    exchange.upstream_request_id = _upstream_id(upstream.headers)
    try:
        if prepared.stream and upstream.status == 200 and _is_sse(upstream):
            return await _relay_stream(gateway, request, exchange, prepared, upstream)
        return await _relay_body(gateway, exchange, upstream)
    finally:
        upstream.release()


def _is_sse(upstream: aiohttp.ClientResponse) -> bool:
    return upstream.content_type == "text/event-stream"


def _upstream_id(headers: Any) -> str | None:
    for name in _UPSTREAM_ID_HEADERS:
        value = headers.get(name)
        if value:
            return str(value)
    return None


def _lost(
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


async def _record(gateway: Gateway, row: LedgerRow) -> None:
    await asyncio.shield(gateway.storage.record(row))
    if log.isEnabledFor(logging.INFO):
        log.info(
            "request",
            extra={
                "request_id": row.request_id,
                "key_id": row.key_id,
                "team": row.team,
                "surface": row.surface,
                "model": row.requested_model,
                "status": row.status,
                "latency_ms": row.latency_ms,
                "input_tokens": row.input_tokens,
                "output_tokens": row.output_tokens,
                "cost_nanos": row.cost_nanos,
                "streamed": row.streamed,
                "disconnected": row.client_disconnected,
                "estimated": row.usage_estimated,
            },
        )


def _headers(exchange: Exchange, upstream: aiohttp.ClientResponse) -> dict[str, str]:
    headers = response_headers(upstream.headers)
    headers[REQUEST_ID_HEADER] = exchange.request_id
    return headers


async def _relay_body(
    gateway: Gateway, exchange: Exchange, upstream: aiohttp.ClientResponse
) -> web.Response:
    try:
        payload = await upstream.read()
    except asyncio.CancelledError:
        await _record(gateway, _lost(gateway, exchange, 499, "client disconnected", True))
        raise
    except TimeoutError:
        await _record(gateway, _lost(gateway, exchange, 504, "upstream timeout"))
        raise UpstreamTimeout("The upstream provider stopped sending its answer.") from None
    except _BROKEN_UPSTREAM:
        await _record(gateway, _lost(gateway, exchange, 502, "upstream broke mid-body"))
        raise UpstreamUnavailable("The upstream provider broke off its answer.") from None
    usage, served, error = _body_usage(exchange, upstream.status, payload)
    row = exchange.row(
        now=gateway.clock.monotonic(),
        usage=usage,
        status=upstream.status,
        served_model=served,
        error=error,
    )
    await _record(gateway, row)
    return web.Response(body=payload, status=upstream.status, headers=_headers(exchange, upstream))


def _body_usage(
    exchange: Exchange, status: int, payload: bytes
) -> tuple[Usage, str | None, str | None]:
    try:
        parsed = orjson.loads(payload) if payload else None
    except orjson.JSONDecodeError:
        parsed = None
    document = parsed if isinstance(parsed, dict) else {}
    served = document.get("model") if isinstance(document.get("model"), str) else None
    if status >= 400:
        return Usage(), served, _upstream_error_text(document, status)
    usage = exchange.spec.usage_of(document)
    if usage is None:
        usage = exchange.estimate(response_text(exchange.spec.surface, document))
    return usage, served, None


def _upstream_error_text(document: dict[str, Any], status: int) -> str:
    error = document.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or ""
        return f"upstream {status}: {str(message)[:300]}"
    return f"upstream {status}"


class _Relay:
    """Moves one SSE stream from upstream to client, event by event, metering as it goes."""

    def __init__(self, exchange: Exchange, meter: StreamMeter) -> None:
        self.exchange = exchange
        self.meter = meter
        self.splitter = EventSplitter()
        self.held: list[bytes] = []
        self.disconnected = False
        self.broken: str | None = None

    def sort(self, chunk: bytes) -> bytes:
        out = []
        for event in self.splitter.feed(chunk):
            action = self.meter.feed(event)
            if action is Action.FORWARD:
                out.append(event.raw)
            elif action is Action.HOLD:
                self.held.append(event.raw)
        return b"".join(out)

    def usage(self) -> Usage:
        reported = self.meter.usage()
        if self.meter.finished and reported is not None:
            return reported
        estimate = self.exchange.estimate(self.meter.generated_text())
        if self.meter.finished:
            return estimate
        return cut_short(reported, estimate)


async def _relay_stream(
    gateway: Gateway,
    request: web.Request,
    exchange: Exchange,
    prepared: Prepared,
    upstream: aiohttp.ClientResponse,
) -> web.StreamResponse:
    response = web.StreamResponse(status=upstream.status, headers=_headers(exchange, upstream))
    relay = _Relay(exchange, exchange.spec.meter(prepared))
    try:
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            out = relay.sort(chunk)
            if out:
                await response.write(out)
    except asyncio.CancelledError:
        relay.disconnected = True
        upstream.close()
        await _record(gateway, _stream_row(gateway, relay))
        raise
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        relay.disconnected = True
        upstream.close()
    except TimeoutError:
        relay.broken = "upstream timeout mid-stream"
    except _BROKEN_UPSTREAM as exc:
        relay.broken = f"upstream broke mid-stream: {type(exc).__name__}"
    if not relay.meter.finished and relay.broken is None and not relay.disconnected:
        relay.broken = "upstream ended the stream without its terminal event"
    await _record(gateway, _stream_row(gateway, relay))
    if not relay.disconnected:
        await _finish_stream(response, relay)
    return response


def _stream_row(gateway: Gateway, relay: _Relay) -> LedgerRow:
    error = relay.broken or relay.meter.upstream_error
    if relay.disconnected:
        error = "client disconnected mid-stream"
    return relay.exchange.row(
        now=gateway.clock.monotonic(),
        usage=relay.usage(),
        status=200,
        served_model=relay.meter.served_model,
        client_disconnected=relay.disconnected,
        error=error,
    )


async def _finish_stream(response: web.StreamResponse, relay: _Relay) -> None:
    tail = b""
    if relay.broken is not None:
        tail += relay.meter.error_event(
            "upstream_error",
            f"The upstream provider's stream broke off ({relay.broken}); what was generated "
            "so far has been metered.",
        )
    tail += b"".join(relay.held)
    try:
        if tail:
            await response.write(tail)
        await response.write_eof()
    except (ConnectionResetError, aiohttp.ClientConnectionResetError):
        pass
