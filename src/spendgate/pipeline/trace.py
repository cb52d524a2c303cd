"""No provider call without a durable trace.

A request that a budget or limit applies to reserves its worst case before its call
(`spendgate.pipeline.budgeting.admit`): that reservation's lease is its durable trace. A
billed request that none applies to leaves one too: a lease with no counters, holding its
worst case, written before the call in one storage write. If its row is never written
(the gateway dies; storage fails when it ends and the spool cannot hold it), the lease
lapses and the sweeper writes the request's row at that worst case, flagged
``unreconciled``: an outage or a crash between the call and the row is charged
conservatively, never lost. When storage cannot take the trace, the request is refused
before the call (`spendgate.pipeline.outage`), unless the operator's outage allowance
(`spendgate.services.outage`) lets it pass.

The trace's worst case is bounded without counting tokens, so the plain path pays one
write and no tokenizer: its input is at most the body's size in bytes (a token is at
least a byte of the text, which the JSON body holds at least once), or the model's whole
window, once per model pass, for input the body does not show. A part that is not text
(an image, audio, a file or document) can cost more tokens than its bytes (one image of
a few hundred bytes is up to 48,169 tokens for gpt-4o-mini), so the body is also walked
by the byte bound admission uses (`spendgate.domain.token_bound`: each such part at its
documented most), and the larger of the two is the bound. The walk reads the parsed body's
structure and the lengths of its texts: 3 µs for a short chat, 0.25 ms for 1 MB in 400
messages (a search of the raw bytes for the parts' names cost 3.4 ms there).
"""

from __future__ import annotations

from spendgate.domain.budgets import Unit
from spendgate.domain.tokens import TokenCount
from spendgate.errors import StorageError
from spendgate.gateway import Gateway
from spendgate.pipeline.bodywork import byte_bound
from spendgate.pipeline.exchange import Exchange
from spendgate.pipeline.outage import storage_refusal
from spendgate.pipeline.worst_case import Bounding, price_worst_case
from spendgate.storage import ReservationPlan


def input_bound(exchange: Exchange, raw: bytes) -> int:
    """At least the body's input tokens, counted by no tokenizer (module docstring)."""
    return max(len(raw), byte_bound(exchange))


async def trace(gateway: Gateway, exchange: Exchange, raw: bytes) -> str | None:
    """Write the request's trace (see the module docstring); its reservation id, or None
    when storage failed and the outage allowance let the request pass untraced.
    `StorageUnavailable` when it did neither."""
    snapshot = exchange.snapshot
    settings = snapshot.config.budget_settings
    window = exchange.price.max_input_tokens
    bound = input_bound(exchange, raw)
    hidden = exchange.hidden_input().for_input(bound)
    bounding = Bounding.BOUND if hidden and window else Bounding.COUNT
    priced = price_worst_case(
        exchange,
        settings.default_max_output_tokens,
        assumed_tool_calls=settings.assumed_tool_calls,
        bounding=bounding,
        count=TokenCount(min(bound, window) if window else bound, exact=False),
    )
    worst = priced.worst
    plan = ReservationPlan(
        reservation_id=exchange.request_id,
        owner=gateway.owner,
        expires_at=exchange.arrived + gateway.lease_of(snapshot),
        counters=(),
        worst=worst,
        caps=(),
        min_output=0,
        template=exchange.template_row(),
    )
    try:
        await gateway.storage.reserve(plan)
    except StorageError:
        if gateway.outage.take(worst.amount(Unit.NANOS, worst.requested_ceiling)):
            return None
        raise storage_refusal() from None
    gateway.outage.recovered()
    return plan.reservation_id
