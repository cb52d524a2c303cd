"""GET /admin/audit: every admin change, newest first, as JSON or CSV.

Query: ``since``, ``until`` (ISO 8601 times; ``until`` excluded), ``actor`` (as the entries
name it: ``token:<id> (<name>)``, ``env``, ``cli:<user>``), ``action`` (``key.create``, ...),
``limit`` (default 1000), ``format`` (``json`` or ``csv``). A team admin's or a team
viewer's answer holds its team's entries only.
"""

from __future__ import annotations

import orjson
from aiohttp import web

from spendgate.api.auth import guard, principal_of
from spendgate.api.serialize import wants_csv
from spendgate.domain.audit import to_csv
from spendgate.domain.roles import Access
from spendgate.gateway import Gateway
from spendgate.services.audit import audit_query


async def _audit(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    csv = wants_csv(request.query)
    entries = await gateway.audit_service.entries(audit_query(request.query), principal_of(request))
    if csv:
        return web.Response(
            text=to_csv(entries),
            content_type="text/csv",
            headers={"content-disposition": 'attachment; filename="audit.csv"'},
        )
    return web.Response(
        body=orjson.dumps({"data": [entry.to_json() for entry in entries]}),
        content_type="application/json",
    )


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    app.router.add_get("/admin/audit", guard(gateway_key, _audit, Access.TEAM_READ))
