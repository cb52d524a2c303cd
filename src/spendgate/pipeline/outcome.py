"""How a request's outcome is written down and shown: its ledger row (settling its
reservation in the same step) and the headers the client gets."""

from __future__ import annotations

import asyncio
import logging

import aiohttp

from spendgate.domain.ledger import LedgerRow
from spendgate.gateway import Gateway
from spendgate.pipeline.budgeting import finish
from spendgate.pipeline.exchange import Exchange
from spendgate.upstream.providers import response_headers

log = logging.getLogger("spendgate.access")

REQUEST_ID_HEADER = "x-spendgate-request-id"
BROKEN_UPSTREAM = (
    aiohttp.ClientPayloadError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ClientOSError,
)


async def record(gateway: Gateway, exchange: Exchange, row: LedgerRow) -> None:
    """Write the row (settling the reservation, if any) before the response's last byte."""
    exchange.settled = True
    await asyncio.shield(finish(gateway.storage, exchange, row))
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


def client_headers(exchange: Exchange, upstream: aiohttp.ClientResponse) -> dict[str, str]:
    headers = response_headers(upstream.headers)
    headers[REQUEST_ID_HEADER] = exchange.request_id
    if exchange.ticket is not None:
        headers.update(exchange.ticket.headers(exchange.spec.dialect, exchange.arrived))
    return headers
