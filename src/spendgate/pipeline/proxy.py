"""The request path: authenticate, resolve the model, forward, relay, meter, record.

Ordering rule: a response's last byte (the whole body, or a stream's terminal event) is
sent only once its spend is durable, as its ledger row or as its reservation's lease
(`spendgate.pipeline.outcome.answer_and_record`), so ``kill -9`` cannot lose the spend of
a request the client saw complete. Requests that never reached an upstream leave no row.
"""

from __future__ import annotations

import asyncio
import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from spendgate.dialects import Prepared, SurfaceSpec
from spendgate.domain.budgets import Caller
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.models import ModelRoute, ProviderKind
from spendgate.domain.routing import Decision, RouteKind
from spendgate.domain.usage import Usage
from spendgate.errors import (
    BudgetExceeded,
    CircuitOpen,
    GatewayError,
    InvalidRequest,
    LoopDetected,
    RateLimited,
    RequestCapExceeded,
    RequestTooLarge,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from spendgate.gateway import Gateway
from spendgate.pipeline.budgeting import admit, record_block, would_cost
from spendgate.pipeline.exchange import Exchange, new_request_id
from spendgate.pipeline.outcome import (
    REQUEST_ID_HEADER,
    answer_and_record,
    client_headers,
    record,
)
from spendgate.pipeline.relay import relay_stream
from spendgate.pipeline.routing import Policy, attempts, decide, price_of
from spendgate.pipeline.ticket import Ticket
from spendgate.upstream.client import (
    Broken,
    ConnectTimeout,
    ReadTimeout,
    Unreachable,
    UpstreamFailure,
    UpstreamResponse,
)

REQUEST_ID_KEY = web.RequestKey(REQUEST_ID_HEADER, str)  # a str key warns on aiohttp >= 3.14
_UPSTREAM_ID_HEADERS = ("x-request-id", "request-id")


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
    request[REQUEST_ID_KEY] = request_id
    key = await gateway.keys.authenticate(credential(request))
    raw, body = await read_json_object(request, gateway.config.server.max_body_bytes)
    org = gateway.config.org_of_team(key.team) or key.org
    session = _session(request, gateway.config.runaway.session_headers)
    caller = Caller(key=key, org=org, model=require_model(body), session=session)
    policy = Policy.of(gateway)
    route, decision = await decide(gateway, policy, spec, caller, body, request.headers)
    incoming = _Incoming(
        request_id, arrived, started, spec, caller, raw, body, _retry_count(request), policy
    )
    while True:
        # A downgrade rule applies "instead of refusing": when the budget cannot afford
        # this model (the threshold was crossed while the request was being routed), the
        # next tier down is tried before the request is refused.
        cheaper = _cheaper(policy, caller, route, decision)
        try:
            return await _run(gateway, request, incoming, route, decision, cheaper is None)
        except BudgetExceeded:
            if cheaper is None or decision is None:
                raise
            rule, route = cheaper
            decision = dataclasses.replace(
                decision, model=route.name, rule=rule, kind=RouteKind.DOWNGRADE, premium=False
            )


def _cheaper(
    policy: Policy, caller: Caller, route: ModelRoute, decision: Decision | None
) -> tuple[str, ModelRoute] | None:
    """The downgrade rule and the next tier down to try if ``route`` is refused by a
    budget; None when no enforced downgrade applies or the tier could not serve the key."""
    if decision is None:
        return None
    step = policy.router.step_down(caller, route.name)
    if step is None:
        return None
    target = policy.table.get(step[1])
    if target is None or target.dialect is not route.dialect:
        return None
    try:
        policy.table.authorize(target, caller.key, asked=caller.model)
    except GatewayError:  # the key may not use it, or it has no price
        return None
    return step[0], target


@dataclass(frozen=True, slots=True)
class _Incoming:
    """What stays the same across a request's attempts."""

    request_id: str
    arrived: datetime
    started: float
    spec: SurfaceSpec
    caller: Caller
    raw: bytes
    body: dict[str, Any]
    retry_count: int
    policy: Policy


async def _run(
    gateway: Gateway,
    request: web.Request,
    incoming: _Incoming,
    route: ModelRoute,
    decision: Decision | None,
    record_refusal: bool,
) -> web.StreamResponse:
    """Try the model's deployments, then its fallbacks, until one answers."""
    caller, policy = incoming.caller, incoming.policy
    chain = attempts(
        gateway, policy, route, caller.key, asked=caller.model, needs_price=incoming.spec.billed
    )
    baseline = decision.baseline if decision else route.name  # the model asked for
    failed: _Failed | None = None
    previous: str | None = None
    for index, attempt in enumerate(chain):
        last = index == len(chain) - 1
        exchange = Exchange(
            request_id=incoming.request_id if index == 0 else f"{incoming.request_id}-{index}",
            arrived=incoming.arrived,
            started=incoming.started,
            spec=incoming.spec,
            key=caller.key,
            org=caller.org,
            route=attempt.route,
            deployment=attempt.deployment,
            provider=attempt.provider,
            price=attempt.price,
            body=incoming.body if len(chain) == 1 else dict(incoming.body),
            session_id=caller.session,
            retry_count=incoming.retry_count,
            decision=decision,
            asked=caller.model,
            baseline_model=baseline,
            baseline_price=price_of(policy, baseline, attempt.route),
            shadow_price=price_of(
                policy, decision.shadow_model if decision else None, attempt.route
            ),
            attempt=index,
            fallback_from=previous,
        )
        request[REQUEST_ID_KEY] = exchange.request_id
        previous = attempt.route.name
        try:
            outcome = await _attempt(
                gateway,
                request,
                exchange,
                incoming.raw,
                skip_open=not last,
                record_refusal=record_refusal or index > 0,
            )
        except _REFUSALS:
            if failed is None:
                raise
            break  # a fallback the budget or a limit refuses: answer the earlier failure
        if not isinstance(outcome, _Failed):
            return outcome
        outcome.request_id = exchange.request_id
        if failed is None or outcome.reached or not failed.reached:
            failed = outcome  # the latest failure, but one that reached an upstream first
    assert failed is not None
    return failed.answer(request)


@dataclass(slots=True)
class _Failed:
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


# Refusals at admission: a fallback they stop leaves the earlier failure as the answer.
_REFUSALS = (BudgetExceeded, RateLimited, LoopDetected, RequestCapExceeded, CircuitOpen)


async def _attempt(
    gateway: Gateway,
    request: web.Request,
    exchange: Exchange,
    raw: bytes,
    *,
    skip_open: bool,
    record_refusal: bool,
) -> web.StreamResponse | _Failed:
    """One try at one deployment. ``skip_open``: a fallback follows, so an open circuit
    breaker passes this deployment by instead of refusing the request."""
    wait = _breaker_wait(gateway, exchange)
    if wait is not None:
        refusal = _breaker_refusal(gateway, exchange, wait)
        if skip_open:
            return _Failed(error=refusal, reached=False)
        worst = would_cost(exchange, gateway.config.budget_settings.default_max_output_tokens)
        await record_block(gateway.storage, exchange, refusal, worst)
        raise refusal
    deployment = exchange.deployment
    try:
        exchange.ticket = await _admit(gateway, exchange, record_refusal)
        prepared = exchange.spec.prepare(
            raw,
            exchange.body,
            deployment.upstream_model,
            ceiling=_ceiling_to_send(exchange.ticket),
            legacy_field=exchange.provider.kind is ProviderKind.OPENAI_COMPATIBLE,
        )
        exchange.stream = prepared.stream
        return await _forward(gateway, request, exchange, prepared)
    finally:
        if gateway.breakers is not None:
            gateway.breakers.abandon(_breaker_key(exchange))  # a probe that never got an answer
        if exchange.ticket is not None and not exchange.settled:
            # Never reached an upstream (unreachable, bad body...): give the budget back.
            await asyncio.shield(gateway.storage.release(exchange.request_id))


def _session(request: web.Request, names: list[str]) -> str | None:
    for name in names:
        value = request.headers.get(name)
        if value:
            return value[:200]
    return None


def _retry_count(request: web.Request) -> int:
    value = request.headers.get("x-stainless-retry-count", "0")
    return int(value) if value.isdigit() else 0


def _breaker_key(exchange: Exchange) -> tuple[str, str]:
    return (exchange.key.id, exchange.route.name)


def _breaker_wait(gateway: Gateway, exchange: Exchange) -> float | None:
    """Seconds until the breaker for this key and model lets a request through; None: shut."""
    if gateway.breakers is None:
        return None
    return gateway.breakers.wait(_breaker_key(exchange), gateway.clock.monotonic())


def _breaker_refusal(gateway: Gateway, exchange: Exchange, wait: float) -> CircuitOpen:
    assert gateway.breakers is not None
    return CircuitOpen(
        f"The upstream for '{exchange.route.name}' failed {gateway.breakers.threshold} times "
        f"in a row for this key; spendgate fails fast instead of paying for more failing "
        f"calls. It will try again in {wait:.1f} s.",
        wait_s=wait,
        blocked_by="circuit-breaker",
    )


def _breaker_outcome(gateway: Gateway, exchange: Exchange, ok: bool | None) -> None:
    """``ok`` None: no answer either way (the client left); a probe is given up."""
    if gateway.breakers is None:
        return
    key = _breaker_key(exchange)
    if ok is None:
        gateway.breakers.abandon(key)
    else:
        gateway.breakers.record(key, gateway.clock.monotonic(), ok=ok)


async def _admit(gateway: Gateway, exchange: Exchange, record_refusal: bool) -> Ticket | None:
    # Token-counting calls are free upstream: no budget, limit or loop counter applies
    # (Claude Code calls count_tokens often; a spent budget must not break it).
    if not gateway.budgets or not exchange.spec.billed:
        return None
    settings = gateway.config.budget_settings
    return await admit(
        gateway.storage,
        gateway.budgets,
        exchange,
        owner=gateway.owner,
        lease=gateway.lease,
        min_output=settings.min_output_tokens,
        default_ceiling=settings.default_max_output_tokens,
        record_refusal=record_refusal,
    )


def _ceiling_to_send(ticket: Ticket | None) -> int | None:
    """Spendgate sets the output ceiling only when it clamps one or the request had none."""
    if ticket is None:
        return None
    if ticket.admitted.clamped or ticket.requested_ceiling is None:
        return ticket.ceiling
    return None


async def _forward(
    gateway: Gateway, request: web.Request, exchange: Exchange, prepared: Prepared
) -> web.StreamResponse | _Failed:
    """Send the request upstream and relay the answer. A failure before the client has seen
    a byte (unreachable, timeout, 429, 5xx) comes back as `_Failed`, for a fallback to take
    over; once a stream's first byte is relayed, there is no going back."""
    provider = exchange.provider
    try:
        upstream = await gateway.upstream.send(
            provider,
            exchange.spec.path,
            prepared.body,
            request.headers,
            query=request.query_string,
        )
    except asyncio.CancelledError:
        _breaker_outcome(gateway, exchange, None)
        await record(gateway, exchange, _lost(gateway, exchange, 499, "client disconnected", True))
        raise
    except UpstreamFailure as failure:
        _breaker_outcome(gateway, exchange, False)
        return await _unanswered(gateway, exchange, failure)
    exchange.mark_first_byte(gateway.clock.monotonic())
    exchange.upstream_request_id = _upstream_id(upstream.headers)
    failing = upstream.status >= 500 or upstream.status == 429
    _breaker_outcome(gateway, exchange, not failing)
    try:
        if prepared.stream and upstream.status == 200 and _is_stream(exchange, upstream):
            return await relay_stream(gateway, request, exchange, prepared, upstream)
        if failing:
            return _Failed(response=await _relay_body(gateway, exchange, upstream))
        return await _relay_body(gateway, exchange, upstream, request)
    finally:
        upstream.release()


async def _unanswered(gateway: Gateway, exchange: Exchange, failure: UpstreamFailure) -> _Failed:
    """No answer from the provider. Nothing was sent when it could not be reached (no row);
    otherwise it may have billed: the estimated input is charged."""
    name = exchange.provider.name
    if isinstance(failure, (Unreachable, ConnectTimeout)):
        return _Failed(
            error=UpstreamUnavailable(
                f"The upstream provider '{name}' could not be reached: {failure}."
            ),
            reached=False,
        )
    if isinstance(failure, ReadTimeout):
        await record(gateway, exchange, _lost(gateway, exchange, 504, "upstream timeout"))
        return _Failed(
            error=UpstreamTimeout(f"The upstream provider '{name}' did not answer in time.")
        )
    await record(gateway, exchange, _lost(gateway, exchange, 502, str(failure)))
    return _Failed(
        error=UpstreamUnavailable(
            f"The connection to the upstream provider '{name}' broke before it answered."
        )
    )


def _is_stream(exchange: Exchange, upstream: UpstreamResponse) -> bool:
    return upstream.content_type == exchange.provider.framing.content_type


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


async def _relay_body(
    gateway: Gateway,
    exchange: Exchange,
    upstream: UpstreamResponse,
    request: web.Request | None = None,
) -> web.Response:
    """The upstream's answer, whole, and its ledger row. With a ``request`` the answer is
    final (no fallback can replace it) and is sent here, in the order `answer_and_record`
    chooses; without one the row is written and the caller decides what to send."""
    try:
        payload = await upstream.read()
    except asyncio.CancelledError:
        await record(gateway, exchange, _lost(gateway, exchange, 499, "client disconnected", True))
        raise
    except ReadTimeout:
        await record(gateway, exchange, _lost(gateway, exchange, 504, "upstream timeout"))
        raise UpstreamTimeout("The upstream provider stopped sending its answer.") from None
    except Broken:
        await record(gateway, exchange, _lost(gateway, exchange, 502, "upstream broke mid-body"))
        raise UpstreamUnavailable("The upstream provider broke off its answer.") from None
    usage, served, error = _body_usage(exchange, upstream.status, payload)
    row = exchange.row(
        now=gateway.clock.monotonic(),
        usage=usage,
        status=upstream.status,
        served_model=served,
        error=error,
    )
    response = web.Response(
        body=payload, status=upstream.status, headers=client_headers(exchange, upstream)
    )
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
        usage = exchange.estimate(exchange.spec.response_text(document))
    return usage, served, None


def _upstream_error_text(document: dict[str, Any], status: int) -> str:
    error = document.get("error")
    if isinstance(error, dict):
        message = error.get("message") or error.get("type") or ""
        return f"upstream {status}: {str(message)[:300]}"
    return f"upstream {status}"
