"""How a request's outcome is written down and shown: its ledger row (settling its
reservation in the same step) and the headers the client gets."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

from spendgate.domain.ledger import LedgerRow
from spendgate.errors import StorageError
from spendgate.events import Event, Served, SettledAbove, UpstreamFailed, UsageAnomaly
from spendgate.gateway import Gateway
from spendgate.pipeline.budgeting import charged, finish, settled_above, settlement
from spendgate.pipeline.exchange import Exchange
from spendgate.pipeline.intake import REQUEST_ID_HEADER
from spendgate.storage.base import StoredCounter
from spendgate.storage.spool import Unwritten
from spendgate.upstream.client import UpstreamResponse
from spendgate.upstream.providers import response_headers

log = logging.getLogger("spendgate.access")

MODEL_HEADER = "x-spendgate-model"  # the gateway model that served the request
REQUESTED_MODEL_HEADER = "x-spendgate-requested-model"  # the name the client sent
ROUTE_RULE_HEADER = "x-spendgate-route-rule"  # the routing rule that chose the model
ROUTE_KIND_HEADER = "x-spendgate-route-kind"  # alias, rewrite or downgrade
PREMIUM_HEADER = "x-spendgate-premium"  # "kept": a premium model a rewrite would have moved
FALLBACK_HEADER = "x-spendgate-fallback-from"  # the model that failed before this one answered
COST_HEADER = "x-spendgate-cost"  # dollars charged for this request (non-streamed answers)


@dataclass(frozen=True, slots=True)
class _Settling:
    """A request's row as it is written (overruns named), what it settles, and, once its
    counters were charged before the answer (`Storage.charge_first`), what they held."""

    row: LedgerRow
    item: Unwritten
    overruns: list[SettledAbove]
    held: tuple[StoredCounter, ...] | None = None


def _settling(exchange: Exchange, row: LedgerRow) -> _Settling:
    amounts = charged(exchange, row)  # settling does not change tokens or cost
    overruns = settled_above(exchange, row, amounts)
    if overruns:
        row = dataclasses.replace(row, settled_above=tuple(o.budget for o in overruns))
    return _Settling(row, settlement(exchange, row, amounts), overruns)


async def _charge_first(gateway: Gateway, exchange: Exchange, row: LedgerRow) -> _Settling | None:
    """Charge the request's counters before its answer, keeping its row with them until
    the ledger has it (`Storage.charge_first`, counters on Redis): the client's next
    request finds it settled, and no ledger commit waits on the answer's path. None where
    the storage keeps no rows with its counters, or did not take it now (the row then
    settles the reservation after the answer, as for any other backend)."""
    if gateway.storage.keeps_rows is None:
        return None
    settling = _settling(exchange, row)
    item = settling.item
    if item.reservation_id is None:
        return None
    try:
        held = await gateway.storage.charge_first(
            item.reservation_id, item.amounts, settling.row, gateway.lease
        )
    except StorageError as exc:  # settled after the answer instead (or spooled)
        log.warning(
            "could not charge a request's counters before its answer",
            extra={"request_id": row.request_id, "error": str(exc)},
        )
        return None
    if held is None:
        return None
    if exchange.ticket is not None:  # room given back: a request waiting in line may fit
        gateway.admission.freed(exchange.ticket.keys)
        gateway.admission.took(gateway.clock.monotonic() - exchange.started)  # settled now
    return dataclasses.replace(settling, held=held)


async def record(
    gateway: Gateway,
    exchange: Exchange,
    row: LedgerRow,
    *,
    own_task: bool = False,
    charged_first: _Settling | None = None,
) -> None:
    """Write the row, settling the reservation if any (see `answer_and_record` for when),
    and report the attempt's outcome. A row storage will not take waits in the spool
    (`spendgate.storage.spool`): the request has reached the provider, its answer goes on.
    ``charged_first``: its counters were charged before the answer; the row is written
    to the ledger and forgotten by the counter store (`Storage.ship`).

    The write is shielded from the caller's cancellation (a client hanging up cancels its
    handler), unless ``own_task``: `answer_and_record` runs this in a task of its own that
    no handler awaits, so a shield (another task per request) would guard against nothing."""
    exchange.settled = True
    settling = charged_first or _settling(exchange, row)
    row, item, overruns = settling.row, settling.item, settling.overruns
    try:
        if settling.held is not None and item.reservation_id is not None:
            writing = gateway.storage.ship(item.reservation_id, settling.held, item.amounts, row)
        else:
            writing = finish(gateway.storage, item)
        await (writing if own_task else asyncio.shield(writing))
    except StorageError as exc:
        if settling.held is not None:  # counters charged: the row alone waits
            item = Unwritten(row, None)
        durable = gateway.spool.add(item)
        log.error(
            "storage did not take a request's row; it waits in the spool",
            extra={"request_id": row.request_id, "on_disk": durable, "error": str(exc)},
        )
    if exchange.ticket is not None and settling.held is None:  # (else: `_charge_first`)
        gateway.admission.freed(exchange.ticket.keys)
        gateway.admission.took(gateway.clock.monotonic() - exchange.started)
    reporter = exchange.reporter
    if row.status == 429 or row.status >= 500:
        event: Event = UpstreamFailed(
            row.request_id,
            exchange.provider.name,
            exchange.route.name,
            row.status,
            row.error or f"upstream {row.status}",
            row,
        )
    else:
        event = Served(row, round(exchange.upstream_s * 1000, 3))
    reporter.outcome(event)
    for over in overruns:
        reporter.notice(over)
    if row.usage_problem is not None:
        problem = row.usage_problem
        reporter.notice(
            UsageAnomaly(row.request_id, exchange.provider.name, exchange.route.name, problem)
        )


async def answer_and_record(
    gateway: Gateway,
    exchange: Exchange,
    row: LedgerRow,
    answer: Callable[[], Awaitable[None]],
) -> None:
    """Send the end of the answer and write the request's row, in the order that keeps its
    spend durable before the client has the last byte.

    A request that holds a reservation is answered first: its lease, committed before the
    call, holds its worst case until the row settles it (a crash in between charges that,
    flagged unreconciled), so the client need not wait for the commit. Any other request
    writes its row first (settling its trace, if it has one), so a request the client saw
    complete is on record at its real cost: a crash cannot turn it into a worst case.

    The row of an answered request is written in a task of its own that the handler does
    not wait for: aiohttp starts the next request of a keep-alive connection only once the
    handler returns, so waiting here would put this row's round trips (the ledger commit,
    the counters' settlement) on the path of the client's next request. The task is held
    in `Gateway.unsettled` until the row is written; `Gateway.settled` (admin reads, the
    drain at shutdown) waits for it. A row charged first goes to the ledger with those of
    the next few ms (`spendgate.storage.shipping`), not alone beside the next request.
    """
    if exchange.ticket is None:
        await record(gateway, exchange, row)
        await answer()
        return
    # Counted as unsettled before the first byte goes out, until the row is written, even
    # if this task is cancelled meanwhile (aiohttp cancels a handler whose client hangs
    # up, which a client may do as soon as it has the whole answer).
    pending: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    gateway.unsettled.add(pending)
    first: _Settling | None = None
    try:
        first = await _charge_first(gateway, exchange, row)
        await answer()
    finally:
        # Settled from here on: the handler's cleanup (`spendgate.pipeline.proxy`) must
        # not release the reservation while the task below has yet to start. (Cancelled
        # while charging, the row settles as if not charged: a charge that did happen
        # meanwhile makes that settlement find the reservation ended, and its kept row
        # is written once, by a sweeper, idempotently.)
        exchange.settled = True
        writing = asyncio.ensure_future(
            record(gateway, exchange, row, own_task=True, charged_first=first)
        )
        gateway.writing.add(writing)  # a strong reference until it is done
        writing.add_done_callback(partial(_written, gateway, pending, exchange.request_id))
        # The client has its answer: a failure to write the row is logged (`_written`)
        # and left to the lease, which charges the worst case; nothing to tell the client.


def _written(
    gateway: Gateway, pending: asyncio.Future[None], request_id: str, writing: asyncio.Future[None]
) -> None:
    gateway.writing.discard(writing)
    gateway.unsettled.discard(pending)
    pending.set_result(None)
    if not writing.cancelled() and writing.exception() is not None:
        log.error(
            "the ledger row of an answered request was not written; its reservation will "
            "lapse and be charged at its worst case",
            extra={"request_id": request_id},
            exc_info=writing.exception(),
        )


def client_headers(exchange: Exchange, upstream: UpstreamResponse) -> dict[str, str]:
    headers = response_headers(upstream.headers)
    headers[REQUEST_ID_HEADER] = exchange.request_id
    headers[MODEL_HEADER] = exchange.route.name
    decision = exchange.decision
    if decision is not None:
        headers[REQUESTED_MODEL_HEADER] = decision.requested
        if decision.rule is not None and decision.kind is not None:
            headers[ROUTE_RULE_HEADER] = decision.rule
            headers[ROUTE_KIND_HEADER] = decision.kind.value
        if decision.premium:
            headers[PREMIUM_HEADER] = "kept"
    if exchange.fallback_from is not None:
        headers[FALLBACK_HEADER] = exchange.fallback_from
    if exchange.ticket is not None:
        headers.update(exchange.ticket.headers(exchange.spec.dialect, exchange.arrived))
    return headers
