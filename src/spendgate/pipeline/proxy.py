"""The request path: authenticate, read, route, then try the attempts (deployments, then
fallbacks) until one answers; each attempt checks its breaker, is admitted (reserved on
every budget and limit), prepared, forwarded and recorded.

Ordering rule: no billed request reaches a provider before a durable trace of it is
written (its reservation, or a trace lease: `spendgate.pipeline.trace`), and a response's
last byte (the whole body, or a stream's terminal event) is sent only once its spend is
durable, as its ledger row or as that lease (`spendgate.pipeline.outcome.answer_and_record`),
so neither ``kill -9`` nor a storage outage can lose the spend of a request. Requests that
never reached an upstream leave no row.

A request reads the gateway's `Snapshot` once, here, and every later step uses that one.
Every request ends in exactly one outcome event per attempt (`spendgate.events`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web

from spendgate.dialects import SurfaceSpec, for_request
from spendgate.dialects.agents import coding_agent
from spendgate.domain.budgets import Caller
from spendgate.domain.identity import ApiKey
from spendgate.domain.models import ModelRoute, ProviderKind
from spendgate.domain.pricing import Price
from spendgate.domain.retries import request_shape
from spendgate.domain.routing import Decision, RouteKind
from spendgate.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    CircuitOpen,
    GatewayError,
    LoopDetected,
    RateLimited,
    RequestCapExceeded,
    ServiceUnavailable,
    StorageError,
)
from spendgate.events import AuthFailed, Rejected
from spendgate.gateway import Gateway, Snapshot
from spendgate.pipeline.bodywork import BodyWork
from spendgate.pipeline.budgeting import admit, record_block
from spendgate.pipeline.exchange import Exchange, KeyChanged, confirm_key, new_request_id
from spendgate.pipeline.forward import Failed, breaker_key, breakers_of, forward
from spendgate.pipeline.intake import (
    REQUEST_ID_KEY,
    Reporter,
    credential,
    read_json_object,
    require_model,
    retry_count_of,
    session_of,
)
from spendgate.pipeline.outage import storage_refusal
from spendgate.pipeline.routing import Attempt, attempts, decide, price_of
from spendgate.pipeline.ticket import Ticket
from spendgate.pipeline.trace import trace
from spendgate.pipeline.worst_case import would_cost
from spendgate.services.keys import KeyCheck

log = logging.getLogger("spendgate.errors")

# Refusals at admission: a fallback they stop leaves the earlier failure as the answer.
_REFUSALS = (BudgetExceeded, RateLimited, LoopDetected, RequestCapExceeded, CircuitOpen)


async def handle(gateway: Gateway, request: web.Request, spec: SurfaceSpec) -> web.StreamResponse:
    snapshot = gateway.snapshot  # read once: a reload meanwhile does not mix two configs
    request_id = new_request_id()
    request[REQUEST_ID_KEY] = request_id
    reporter = Reporter(gateway.events, request_id, spec.surface.value)
    try:
        if gateway.draining:
            raise ServiceUnavailable("spendgate is shutting down; retry on another replica.")
        secret = credential(request, in_query=spec.key_in_query)
        remembered = gateway.keys.remembered(secret)
        if remembered is None:
            key = await gateway.keys.authenticate(secret)
            reporter.key = key
            return await _serve(gateway, snapshot, request, spec, reporter, key, None)
        return await _serve_remembered(gateway, snapshot, request, spec, reporter, *remembered)
    except StorageError as exc:
        log.error("storage failed", extra={"path": request.path, "error": str(exc)})
        refusal = storage_refusal()
        _report_unanswered(reporter, request, refusal)
        raise refusal from exc
    except GatewayError as error:
        _report_unanswered(reporter, request, error)
        raise
    except asyncio.CancelledError:
        if not reporter.forwarded:  # the client left before anything went upstream
            _report(reporter, 499, None, "the client disconnected before an answer")
        raise
    except web.HTTPException as exc:  # aiohttp's own answer (not expected here)
        _report(reporter, exc.status, None, exc.reason)
        raise
    except Exception:
        _report(reporter, 500, None, "spendgate hit an internal error")
        raise


async def _serve_remembered(
    gateway: Gateway,
    snapshot: Snapshot,
    request: web.Request,
    spec: SurfaceSpec,
    reporter: Reporter,
    key: ApiKey,
    check: KeyCheck,
) -> web.StreamResponse:
    """Serve on the key remembered for the secret while it is read again (`KeyService.
    remembered`); every write and the upstream call wait for it (`confirm_key`). A request
    refused before that (a bad body, a model the key may not use) is answered as the stored
    key says: refused as unauthenticated if it no longer authenticates, or served again
    from the start on the stored key if that differs."""
    reporter.key = key
    try:
        return await _serve(gateway, snapshot, request, spec, reporter, key, check)
    except KeyChanged as changed:
        fresh = changed.key
    except GatewayError:
        if check.asked:
            raise
        fresh = await check.fresh()  # an AuthenticationFailed here replaces the error
        if fresh == key:
            raise
    except BaseException:
        check.abandon()
        raise
    reporter.key = fresh
    return await _serve(gateway, snapshot, request, spec, reporter, fresh, None)


def _report_unanswered(reporter: Reporter, request: web.Request, error: GatewayError) -> None:
    """The outcome event of a request refused before any attempt reported one."""
    if isinstance(error, AuthenticationFailed):
        if not reporter.reported:
            reporter.outcome(AuthFailed(reporter.request_id, reporter.surface, error.message))
        return
    status = for_request(request.path, request.headers).error_status(error)  # as answered
    _report(reporter, status, error.code, error.message)


def _report(reporter: Reporter, status: int, code: str | None, message: str) -> None:
    if reporter.reported:
        return
    key = reporter.key
    key_id = key.id if key is not None else None
    event = Rejected(
        reporter.request_id,
        reporter.surface,
        key_id,
        status,
        code,
        message,
        key=key,
        model=reporter.model,
    )
    reporter.outcome(event)


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
    snapshot: Snapshot
    reporter: Reporter
    key_check: KeyCheck | None  # the key being read again, if it started on a remembered one


async def _serve(
    gateway: Gateway,
    snapshot: Snapshot,
    request: web.Request,
    spec: SurfaceSpec,
    reporter: Reporter,
    key: ApiKey,
    check: KeyCheck | None,
) -> web.StreamResponse:
    started = gateway.clock.monotonic()
    arrived = gateway.clock.now()
    config = snapshot.config
    raw, body = await read_json_object(request, config.server, gateway.offload)
    spec.check(body)
    session = session_of(request, config.runaway.session_headers)
    in_path = request.match_info.get("model", "") if spec.model_in_path else None
    reporter.model = require_model(body, in_path)
    caller = Caller(key=key, org=snapshot.org_of(key), model=reporter.model, session=session)
    route, decision = await decide(
        gateway.storage, snapshot, spec, caller, body, request.headers, arrived
    )
    # An agent's own retry (same session, same shape, after a failure) counts as one even
    # though its x-stainless-retry-count says 0 (`spendgate.domain.retries`).
    shape = request_shape(spec.surface.value, caller.model, body)
    retry = max(retry_count_of(request), gateway.retries.retry_of(session, shape, started))
    incoming = _Incoming(
        reporter.request_id,
        arrived,
        started,
        spec,
        caller,
        raw,
        body,
        retry,
        snapshot,
        reporter,
        check,
    )
    ok = False
    try:
        while True:
            # A downgrade rule applies "instead of refusing": when the budget cannot afford
            # this model (the threshold was crossed while the request was being routed), the
            # next tier down is tried before the request is refused.
            cheaper = _cheaper(snapshot, caller, route, decision)
            try:
                response = await _run(gateway, request, incoming, route, decision, cheaper is None)
                ok = response.status < 400
                return response
            except BudgetExceeded:
                if cheaper is None or decision is None:
                    raise
                rule, route = cheaper
                decision = dataclasses.replace(
                    decision, model=route.name, rule=rule, kind=RouteKind.DOWNGRADE, premium=False
                )
    finally:
        gateway.retries.ended(session, shape, gateway.clock.monotonic(), retry=retry, ok=ok)


def _cheaper(
    snapshot: Snapshot, caller: Caller, route: ModelRoute, decision: Decision | None
) -> tuple[str, ModelRoute] | None:
    """The downgrade rule and the next tier down to try if ``route`` is refused by a
    budget; None when no enforced downgrade applies or the tier could not serve the key."""
    if decision is None:
        return None
    step = snapshot.router.step_down(caller, route.name)
    if step is None:
        return None
    target = snapshot.models.get(step[1])
    if target is None or target.dialect is not route.dialect:
        return None
    try:
        snapshot.models.authorize(target, caller.key, asked=caller.model)
    except GatewayError:  # the key may not use it, or it has no price
        return None
    return step[0], target


async def _run(
    gateway: Gateway,
    request: web.Request,
    incoming: _Incoming,
    route: ModelRoute,
    decision: Decision | None,
    record_refusal: bool,
) -> web.StreamResponse:
    """Try the model's deployments, then its fallbacks, until one answers."""
    caller, snapshot = incoming.caller, incoming.snapshot
    chain = attempts(
        snapshot,
        gateway.rng,
        route,
        caller.key,
        asked=caller.model,
        needs_price=incoming.spec.billed,
    )
    baseline = decision.baseline if decision else route.name  # the model asked for
    failed: Failed | None = None
    previous: str | None = None
    waited = 0.0  # on the providers of earlier attempts
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
            snapshot=snapshot,
            reporter=incoming.reporter,
            session_id=caller.session,
            retry_count=incoming.retry_count,
            decision=decision,
            asked=caller.model,
            baseline_model=baseline,
            baseline_price=price_of(snapshot, baseline, attempt.route),
            shadow_price=_shadow_price(snapshot, decision, attempt),
            attempt=index,
            fallback_from=previous,
            refusals_as=for_request(request.path, request.headers),
            agent=coding_agent(request.headers),
            upstream_s=waited,
            key_check=incoming.key_check,
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
        if not isinstance(outcome, Failed):
            return outcome
        waited = exchange.upstream_s
        outcome.request_id = exchange.request_id
        if failed is None or outcome.reached or not failed.reached:
            failed = outcome  # the latest failure, but one that reached an upstream first
    assert failed is not None
    return failed.answer(request)


def _shadow_price(snapshot: Snapshot, decision: Decision | None, attempt: Attempt) -> Price | None:
    """The shadow model's price, for the row's ``shadow_cost_nanos``: the attempt's own when
    the shadow model serves it (a fallback to it), else None without a shadow model."""
    if decision is not None and decision.shadow_model == attempt.route.name:
        return attempt.price
    return price_of(snapshot, decision.shadow_model if decision else None, attempt.route)


async def _attempt(
    gateway: Gateway,
    request: web.Request,
    exchange: Exchange,
    raw: bytes,
    *,
    skip_open: bool,
    record_refusal: bool,
) -> web.StreamResponse | Failed:
    """One try at one deployment. ``skip_open``: a fallback follows, so an open circuit
    breaker passes this deployment by instead of refusing the request."""
    snapshot = exchange.snapshot
    breakers = breakers_of(gateway, exchange)  # none for a free call (token counting)
    wait = None if breakers is None else await breakers.wait(breaker_key(exchange))
    if wait is not None:
        assert breakers is not None
        refusal = _breaker_refusal(exchange, breakers.threshold, wait)
        if skip_open:
            return Failed(error=refusal, reached=False)
        await confirm_key(exchange)  # before its refusal's row
        settings = snapshot.config.budget_settings
        priced = would_cost(
            exchange, settings.default_max_output_tokens, settings.assumed_tool_calls
        )
        await record_block(
            gateway.storage,
            exchange,
            refusal,
            priced.worst if priced else None,
            counted=priced.count.tokens if priced else None,
            work=BodyWork(gateway.offload, raw),
        )
        raise refusal
    try:
        exchange.ticket = await _admit(
            gateway, exchange, BodyWork(gateway.offload, raw), record_refusal
        )
        await confirm_key(exchange)  # before a trace or the upstream call (at once if done)
        if exchange.ticket is None and exchange.spec.billed:
            exchange.trace = await trace(gateway, exchange, raw)
        legacy = exchange.provider.kind is ProviderKind.OPENAI_COMPATIBLE
        ceiling = _ceiling_to_send(exchange.ticket)
        if ceiling is None and legacy:
            # A compatible server may honour only max_tokens: the request's own ceiling
            # goes into every field, so the one it reads is the one that was priced.
            ceiling = exchange.spec.requested_output(exchange.body)[0]
        prepared = exchange.spec.prepare(
            exchange.body,
            exchange.deployment.upstream_model,
            ceiling=ceiling,
            legacy_field=legacy,
        )
        exchange.stream = prepared.stream
        return await forward(gateway, request, exchange, prepared)
    finally:
        if breakers is not None and breakers.probing(breaker_key(exchange)):
            await asyncio.shield(breakers.abandon(breaker_key(exchange)))  # never answered
        lease = exchange.lease_id
        if lease is not None and not exchange.settled:
            # Never reached an upstream (unreachable, bad body...): give the budget back.
            await asyncio.shield(gateway.storage.release(lease))
            if exchange.ticket is not None:
                gateway.admission.freed(exchange.ticket.keys)


def _breaker_refusal(exchange: Exchange, threshold: int, wait: float) -> CircuitOpen:
    return CircuitOpen(
        f"The upstream for '{exchange.route.name}' failed {threshold} times "
        f"in a row for this key; spendgate fails fast instead of paying for more failing "
        f"calls. It will try again in {wait:.1f} s.",
        wait_s=wait,
        blocked_by="circuit-breaker",
    )


async def _admit(
    gateway: Gateway, exchange: Exchange, work: BodyWork, record_refusal: bool
) -> Ticket | None:
    # Token-counting calls are free upstream: no budget, limit or loop counter applies
    # (Claude Code calls count_tokens often; a spent budget must not break it).
    snapshot = exchange.snapshot
    if not exchange.spec.billed or not snapshot.budgets.any_for(exchange.key):
        return None
    settings = snapshot.config.budget_settings
    return await admit(
        gateway.storage,
        snapshot.budgets,
        exchange,
        owner=gateway.owner,
        lease=gateway.lease_of(snapshot),
        min_output=settings.min_output_tokens,
        default_ceiling=settings.default_max_output_tokens,
        assumed_tool_calls=settings.assumed_tool_calls,
        record_refusal=record_refusal,
        thresholds=gateway.thresholds,
        queue=gateway.admission,
        work=work,
        full=gateway.full_limits,
    )


def _ceiling_to_send(ticket: Ticket | None) -> int | None:
    """Spendgate sets the output ceiling only when it lowers one (a budget clamped it, or the
    request asked for more than the model's maximum output) or the request had none: the
    provider then stops where the reservation does."""
    if ticket is None:
        return None
    if ticket.lowered or ticket.requested_ceiling is None:
        return ticket.ceiling
    return None
