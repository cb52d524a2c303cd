"""GET /admin/alerts: the alert delivery log, newest first (``?limit=N``, 100 by default,
1000 at most; ``?status=pending|delivered|failed``), and this process's queue."""

from __future__ import annotations

import orjson
from aiohttp import web

from spendgate.errors import InvalidRequest
from spendgate.gateway import Gateway

STATUSES = ("pending", "delivered", "failed")
DEFAULT_LIMIT, MAX_LIMIT = 100, 1000


def query_limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LIMIT
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}", param="limit")
    return int(text)


def query_status(text: str | None) -> str | None:
    if text is not None and text not in STATUSES:
        raise InvalidRequest(f"'status' must be one of {', '.join(STATUSES)}", param="status")
    return text


async def list_alerts(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    limit = query_limit(request.query.get("limit"))
    status = query_status(request.query.get("status"))
    store = gateway.storage.alert_store
    log = await store.log(limit, status) if store is not None else []
    inbox = gateway.alerter.inbox
    body = {
        "data": [entry.to_json() for entry in log],
        "enabled": gateway.config.alerts.enabled,
        "queued": len(inbox.pending),
        "dropped": inbox.dropped,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")
