"""GET /v1/spendgate/me: what a key may know about itself, with its own spendgate key
(``Authorization: Bearer`` or ``x-api-key``): its identity, every budget and rate limit
that counts its requests (spent, reserved, remaining, state, reset) and its last requests
(``?limit=N``, 20 by default, 100 at most). Never another key's data: the key is the one
the secret names, and nothing here takes a key id."""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from spendgate.api.serialize import key_json
from spendgate.domain.budgets import Caller
from spendgate.domain.ledger import LedgerRow
from spendgate.errors import AuthenticationFailed, InvalidRequest
from spendgate.events import AuthFailed
from spendgate.gateway import Gateway
from spendgate.money import format_dollars
from spendgate.pipeline.exchange import new_request_id
from spendgate.pipeline.intake import REQUEST_ID_KEY, credential
from spendgate.services.forecasts import burn_window, views_json

PATH = "/v1/spendgate/me"
SURFACE = "spendgate.me"
DEFAULT_LIMIT, MAX_LIMIT = 20, 100


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = request.app[gateway_key]
        request[REQUEST_ID_KEY] = request_id = new_request_id()
        limit = _limit(request.query.get("limit"))
        try:
            key = await gateway.keys.authenticate(credential(request))
        except AuthenticationFailed as failed:
            gateway.events.emit(AuthFailed(request_id, SURFACE, failed.message))
            raise
        await gateway.settled()  # its own requests already answered are in what it sees
        now = gateway.clock.now()
        caller = Caller(key=key, org=gateway.config.org_of_team(key.team) or key.org, model="")
        views = await gateway.budget_service.for_caller(caller)
        rows = await gateway.storage.latest_of_key(key.id, limit)
        identity = key_json(key, now)
        identity["org"] = caller.org
        window = burn_window(gateway.config.alerts.burn_window_s)
        body = {
            "key": identity,
            "budgets": await views_json(gateway.storage, views, now, window),
            "requests": [_row_json(row) for row in rows],
        }
        return web.Response(body=orjson.dumps(body), content_type="application/json")

    app.router.add_get(PATH, handler)


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 0 < int(text) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}", param="limit")
    return int(text)


def _row_json(row: LedgerRow) -> dict[str, Any]:
    return {
        "request_id": row.request_id,
        "time": row.ts.isoformat(),
        "model": row.requested_model,
        "routed_model": row.routed_model,
        "status": row.status,
        "cost_nanos": row.cost_nanos,
        "cost": format_dollars(row.cost_nanos, places=6),
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "blocked_by": row.blocked_by,
    }
