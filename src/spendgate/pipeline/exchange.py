"""One request's passage through the gateway, and the ledger row it leaves behind."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from spendgate.dialects import DialectAdapter, SurfaceSpec
from spendgate.dialects.hidden import HiddenInput
from spendgate.domain import tokens
from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.models import Deployment, ModelRoute
from spendgate.domain.output_tokens import GeneratedText
from spendgate.domain.pricing import Price, cost_of
from spendgate.domain.routing import Decision
from spendgate.domain.tokens import counting_model
from spendgate.domain.usage import Usage
from spendgate.gateway import Snapshot
from spendgate.pipeline.intake import Reporter
from spendgate.pipeline.ticket import Ticket
from spendgate.services.keys import KeyCheck
from spendgate.upstream.providers import Provider


def new_request_id() -> str:
    return "req_" + os.urandom(12).hex()


class KeyChanged(Exception):
    """The remembered key a request started on is not the stored one any more (its labels
    or limits changed): the request starts again on ``key``, the stored one."""

    def __init__(self, key: ApiKey) -> None:
        super().__init__(key.id)
        self.key = key


async def confirm_key(exchange: Exchange) -> None:
    """Before anything is written or sent upstream on a request's behalf: the key it
    started on is the stored one (`spendgate.services.keys.KeyService.remembered`).
    Raises `AuthenticationFailed` (revoked, expired, rotated away meanwhile), `KeyChanged`
    or `StorageError` as reading it first would have; at once when already confirmed."""
    check = exchange.key_check
    if check is None:
        return
    fresh = await check.fresh()
    if fresh != exchange.key:
        raise KeyChanged(fresh)


@dataclass(slots=True)
class Exchange:
    request_id: str
    arrived: datetime
    started: float  # monotonic seconds
    spec: SurfaceSpec
    key: ApiKey
    org: str | None
    route: ModelRoute
    deployment: Deployment
    provider: Provider
    price: Price
    body: dict[str, Any]
    snapshot: Snapshot  # what the config built when the request arrived: read once
    reporter: Reporter  # tells the event bus what became of it
    stream: bool = False
    ttfb: float | None = None
    upstream_s: float = 0.0  # spent waiting on providers, this attempt and those before it
    upstream_request_id: str | None = None
    tier_reported: str | None = None  # the tier the answer's headers name (`spec.tier_reported`)
    ticket: Ticket | None = None  # what it reserved on budgets and limits
    trace: str | None = None  # or its lease without counters (`spendgate.pipeline.trace`)
    settled: bool = False
    session_id: str | None = None
    retry_count: int = 0
    decision: Decision | None = None  # how routing chose `route` (None: no routing rules)
    asked: str | None = None  # the model name the client sent
    baseline_model: str | None = None  # the model the request asked for (after its alias)
    baseline_price: Price | None = None  # its price, when another model serves
    shadow_price: Price | None = None  # the price of the model a shadow rule would have used
    attempt: int = 0  # which attempt of the fallback chain
    fallback_from: str | None = None  # the model whose failure led to this attempt
    refusals_as: DialectAdapter | None = None  # the client's reading of refusals (Codex)
    agent: str | None = None  # the coding agent that sent it (`spendgate.dialects.agents`)
    key_check: KeyCheck | None = None  # the key being read again (`confirm_key`)
    _hidden: tuple[SurfaceSpec, dict[str, Any], HiddenInput] | None = dataclasses.field(
        default=None, init=False, repr=False
    )

    @property
    def lease_id(self) -> str | None:
        """The reservation whose lease is the request's durable trace, if it has one."""
        return self.ticket.plan.reservation_id if self.ticket is not None else self.trace

    @property
    def ends_turn_at_clamp(self) -> bool:
        """Whether an answer stopped at its ceiling is told as the end of the turn: a
        coding agent's request whose ceiling a budget lowered (`spendgate.dialects.agents`)."""
        return self.agent is not None and self.ticket is not None and self.ticket.budget_clamped

    def hidden_input(self) -> HiddenInput:
        """What the provider may bill that the body does not show, read once per attempt
        (the trace, the worst case and the usage vetting all ask)."""
        cached = self._hidden
        if cached is None or cached[0] is not self.spec or cached[1] is not self.body:
            cached = (self.spec, self.body, self.spec.hidden_input(self.body))
            self._hidden = cached
        return cached[2]

    def mark_first_byte(self, now: float) -> None:
        if self.ttfb is None:
            self.ttfb = now

    @property
    def counted_as(self) -> str:
        """The model whose tokenizer counts this request (`tokens.counting_model`): the
        upstream model of this attempt, so a gateway name such as ``research`` for
        gpt-6.1-sol is counted exactly with o200k_base, not with the unknown bound."""
        return counting_model(self.route.name, self.deployment.upstream_model)

    def estimate(self, output: str | GeneratedText = "") -> Usage:
        """An estimate for when the provider reported no usage; ``output``: what it
        generated (a stream's `GeneratedText`, or an answer's text). It is served in the
        dearest service tier the request could have been served in (as its worst case
        was reserved): a Priority request is not estimated at the standard rates."""
        model = self.counted_as
        if isinstance(output, GeneratedText):
            count = output.tokens_for(model).tokens
        else:
            count = tokens.count_output_text(model, output).tokens if output else 0
        usage = self.spec.estimate(model, self.body, count)
        tiers = self.spec.service_tiers(self.body, self.provider.default_service_tier)
        return usage.in_tier(self.price.dearest_tier(tiers, usage.input_tokens))

    def row(
        self,
        *,
        now: float,
        usage: Usage,
        status: int,
        served_model: str | None = None,
        client_disconnected: bool = False,
        error: str | None = None,
        template: bool = False,
        usage_problem: str | None = None,
    ) -> LedgerRow:
        """``template``: the identity part only, for a reservation that may lapse (no cost
        and no counterfactual: a lapsed one is charged what it reserved)."""
        billed = self.spec.billed and not template
        if billed:
            usage = self.spec.served_in(usage, self.body, self.tier_reported)
        cost = cost_of(usage, self.price) if billed else 0
        decision = self.decision
        baseline = shadow = None
        if billed and self.baseline_price is not None:
            baseline = cost_of(usage, self.baseline_price)
        if billed and self.shadow_price is not None:
            shadow = cost_of(usage, self.shadow_price)
        # Admission comes before `prepare` sets `self.stream`: a template reads the body.
        streamed = self.spec.asks_stream(self.body) if template else self.stream
        return LedgerRow(
            request_id=self.request_id,
            ts=self.arrived,
            surface=self.spec.surface.value,
            key_id=self.key.id,
            user=self.key.user,
            service=self.key.service,
            team=self.key.team,
            org=self.org,
            tags=self.key.tags,
            requested_model=self.requested_model,
            served_model=served_model or self.deployment.upstream_model,
            provider=self.deployment.provider,
            input_tokens=usage.input_tokens,
            cached_input_tokens=usage.cached_input_tokens,
            cache_write_tokens=usage.cache_write_tokens,
            output_tokens=usage.output_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            cost_nanos=cost,
            status=status,
            latency_ms=round((now - self.started) * 1000, 3),
            ttfb_ms=None if self.ttfb is None else round((self.ttfb - self.started) * 1000, 3),
            streamed=streamed,
            client_disconnected=client_disconnected,
            usage_estimated=usage.estimated,
            upstream_request_id=self.upstream_request_id,
            error=error,
            output_ceiling=self.ticket.ceiling if self.ticket else None,
            clamped_from=self._clamped_from(),
            session_id=self.session_id,
            retry_count=self.retry_count,
            shadow_blocks=self.ticket.admitted.shadow_blocks if self.ticket else (),
            routed_model=self.route.name,
            route_rule=decision.rule if decision else None,
            route_kind=decision.kind.value if decision and decision.kind else None,
            baseline_model=self.baseline_model if decision or self.attempt else None,
            baseline_cost_nanos=baseline,
            shadow_rule=decision.shadow_rule if decision else None,
            shadow_model=decision.shadow_model if decision else None,
            shadow_cost_nanos=shadow,
            attempt=self.attempt,
            fallback_from=self.fallback_from,
            usage_problem=usage_problem,
            service_tier=usage.service_tier,
            tool_calls=usage.tool_calls,
        )

    @property
    def requested_model(self) -> str:
        """The name the client sent (its row's ``requested_model``)."""
        decision = self.decision
        return decision.requested if decision else self.asked or self.route.name

    def _clamped_from(self) -> int | None:
        ticket = self.ticket
        if ticket is None or not ticket.lowered:
            return None
        return ticket.asked

    def template_row(self) -> LedgerRow:
        """The identity part of this request's row, for a reservation that may lapse."""
        return self.row(now=self.started, usage=_NO_USAGE, status=0, template=True)


_NO_USAGE = Usage()


def cut_short(reported: Usage | None, estimate: Usage) -> Usage:
    """Usage of a stream that ended early: the provider's numbers, never below the estimate."""
    if reported is None:
        return estimate
    no_input = reported.input_tokens == 0
    return dataclasses.replace(
        reported,
        output_tokens=max(reported.output_tokens, estimate.output_tokens),
        input_tokens=estimate.input_tokens if no_input else reported.input_tokens,
        audio_input_tokens=estimate.audio_input_tokens if no_input else reported.audio_input_tokens,
        estimated=True,
    )
