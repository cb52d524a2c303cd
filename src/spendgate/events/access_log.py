"""The access log: the first subscriber of the outcome events. One JSON line per outcome of
a request attempt (served, refused, rejected, auth failed, upstream failed), with its
status, reason, identity (key id, team, user, service, org: null when no key was
recognized) and cost (`cost_nanos`, 0 when nothing was charged); never a prompt, a
completion or a secret. Events around requests (thresholds, breakers opening and closing,
lapsed leases, overruns) get a line of their own."""

from __future__ import annotations

import logging
from typing import Any

from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.events import (
    AuthFailed,
    BreakerClosed,
    BreakerOpened,
    Event,
    LeaseLapsed,
    Refused,
    Rejected,
    Served,
    SettledAbove,
    ThresholdCrossed,
    UpstreamFailed,
    UsageAnomaly,
)

log = logging.getLogger("spendgate.access")
notices = logging.getLogger("spendgate.budgets")


def _identity(key: ApiKey | None) -> dict[str, Any]:
    if key is None:
        return {"key_id": None, "team": None, "user": None, "service": None, "org": None}
    return {
        "key_id": key.id,
        "team": key.team,
        "user": key.user,
        "service": key.service,
        "org": key.org,
    }


def _row_fields(row: LedgerRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "key_id": row.key_id,
        "team": row.team,
        "user": row.user,
        "service": row.service,
        "org": row.org,
        "surface": row.surface,
        "model": row.requested_model,
        "provider": row.provider,
        "routed_model": row.routed_model,
        "route_rule": row.route_rule,
        "attempt": row.attempt,
        "status": row.status,
        "latency_ms": row.latency_ms,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "cost_nanos": row.cost_nanos,
        "streamed": row.streamed,
        "disconnected": row.client_disconnected,
        "estimated": row.usage_estimated,
    }


def access_log(event: Event) -> None:
    """Subscribe this to `spendgate.events.Events`."""
    if isinstance(event, Served):
        if log.isEnabledFor(logging.INFO):
            log.info("request", extra={"outcome": "served", **_row_fields(event.row)})
    elif isinstance(event, Refused):
        if log.isEnabledFor(logging.INFO):
            extra = {"outcome": "refused", "reason": event.reason, **_row_fields(event.row)}
            extra["would_cost_nanos"] = event.row.would_cost_nanos
            log.info("request", extra=extra)
    elif isinstance(event, UpstreamFailed):
        if event.row is not None:
            fields = _row_fields(event.row)
        else:  # nothing reached the provider: nothing charged
            fields = {**_identity(event.key), "model": event.model, "cost_nanos": 0}
        log.warning(
            "request",
            extra={
                "outcome": "upstream_failed",
                "reason": event.reason,
                **fields,
                "request_id": event.request_id,
                "provider": event.provider,
                "routed_model": event.model,
                "status": event.status,
                "error": event.error[:300],
            },
        )
    elif isinstance(event, Rejected | AuthFailed):
        _rejected(event)
    else:
        _notice(event)


def _rejected(event: Rejected | AuthFailed) -> None:
    if not log.isEnabledFor(logging.INFO):
        return
    if isinstance(event, AuthFailed):
        extra: dict[str, Any] = {"outcome": "auth_failed", "status": 401, **_identity(None)}
        extra["model"] = None
    else:
        extra = {"outcome": "rejected", "status": event.status, **_identity(event.key)}
        extra.update(key_id=event.key_id, model=event.model)
    extra.update(
        reason=event.reason,
        request_id=event.request_id,
        surface=event.surface,
        cost_nanos=0,
        error=event.message[:300],
    )
    log.info("request", extra=extra)


def _notice(event: Event) -> None:
    if isinstance(event, ThresholdCrossed):
        notices.warning(
            "soft threshold crossed",
            extra={
                "budget": event.budget,
                "member": event.member,
                "threshold_bp": event.threshold_bp,
                "used_bp": event.used_bp,
                "request_id": event.request_id,
            },
        )
    elif isinstance(event, BreakerOpened):
        notices.warning(
            "circuit breaker opened",
            extra={
                "key_id": event.key_id,
                "model": event.model,
                "failures": event.failures,
                "cooldown_s": event.cooldown_s,
            },
        )
    elif isinstance(event, BreakerClosed):
        notices.info("circuit breaker closed", extra={"key_id": event.key_id, "model": event.model})
    elif isinstance(event, LeaseLapsed):
        notices.warning(
            "lapsed reservation settled at its worst case",
            extra={"request_id": event.row.request_id, "cost_nanos": event.row.cost_nanos},
        )
    elif isinstance(event, UsageAnomaly):
        notices.warning(
            "usage not believed: charged an estimate",
            extra={
                "request_id": event.request_id,
                "provider": event.provider,
                "model": event.model,
                "problem": event.problem,
            },
        )
    elif isinstance(event, SettledAbove):
        notices.warning(
            "settled above its reservation",
            extra={
                "request_id": event.request_id,
                "budget": event.budget,
                "member": event.member,
                "reserved": event.reserved,
                "charged": event.charged,
            },
        )
