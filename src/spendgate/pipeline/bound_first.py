"""A body priced by its byte bound before it is counted (issue 17: token counting only
where the worst case needs it).

Counting a body's input tokens needs the tokenizer's tables (``o200k_base``: 32 MB, never
freed once loaded) and costs about 0.7 ms per 16 KiB (a coding agent's 200 KB context:
~9 ms of CPU per request). So admission first prices every body's worst case with an
upper bound that needs no tokenizer (`spendgate.domain.token_bound`: at most one token per
byte of text) and reserves that. If every budget and limit takes it whole (admitted, the
output ceiling not lowered, no budget threshold passed, no shadow limit hit, no
per-request input cap exceeded), the request goes on with that reservation: it holds more
than the exact count would while in flight, and settlement charges the real usage either
way. Otherwise the reservation is given back at once and the body is counted and
admitted exactly, so the bound never refuses, clamps, alerts or marks a shadow block where
the exact count would not. A gateway whose budgets have room never loads a tokenizer for
admission.

A bound given back may still have passed a soft threshold while it was held: other
requests reserving meanwhile found that line already behind them and did not report it,
and the request's own exact reservation may come after theirs. So the bound's decision
is handed on (`BoundTry.given_back`), and the exact reservation reports such a threshold
as crossed if it reaches it too (`Thresholds.crossed`): a crossing is not lost to the
bound, nor reported where the exact reservation stays below it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from spendgate.domain.admission import Admitted, Thresholds
from spendgate.domain.budgets import RequestCap
from spendgate.pipeline.bodywork import BodyWork
from spendgate.pipeline.exchange import Exchange
from spendgate.pipeline.in_line import counter_keys, reserve_confirmed
from spendgate.pipeline.worst_case import Priced
from spendgate.storage import ReservationPlan, Storage


@dataclass(frozen=True, slots=True)
class BoundTry:
    taken: tuple[Priced, ReservationPlan, Admitted] | None  # the bound fitted: kept
    given_back: Admitted | None = None  # the bound's decision, given back (module docstring)


async def reserve_by_bound(
    storage: Storage,
    exchange: Exchange,
    work: BodyWork | None,
    price: Callable[..., Priced],  # `price_worst_case`, given count=
    plan_of: Callable[[Priced, str], ReservationPlan],
    caps: Sequence[RequestCap],
    thresholds: Thresholds | None,
) -> BoundTry:
    """Reserve the body's bound if it fits whole (see the module docstring)."""
    bound = work.input_bound(exchange) if work is not None else None
    if bound is None or any(
        cap.max_input_tokens is not None and bound.tokens > cap.max_input_tokens for cap in caps
    ):
        return BoundTry(None)
    priced = price(count=bound)
    plan = plan_of(priced, exchange.request_id)
    # beside the read that confirms a remembered key (the first write on its behalf)
    decision = await reserve_confirmed(storage, plan, None, counter_keys(plan), exchange)
    if not isinstance(decision, Admitted):
        return BoundTry(None)
    if (
        not decision.clamped
        and not decision.shadow_blocks  # a shadow limit the bound alone would have hit
        and (thresholds is None or not thresholds.would_cross(decision))
    ):
        return BoundTry((priced, plan, decision))
    # Given back before the exact attempt reserves under the same id (the request's: kept
    # rows and sweepers know a reservation by it), which every store allows once the
    # reservation is gone; shielded, so a cancelled request does not leave it held.
    await asyncio.shield(storage.release(plan.reservation_id))
    return BoundTry(None, decision)
