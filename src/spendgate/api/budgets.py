"""Admin routes for budgets: see them, change limits at run time, reset them.

GET    /admin/budgets                     every budget's counters (?name=)
PUT    /admin/budgets/{name}/limit        {"limit": "250.00", "expires_at": null | ISO time}
DELETE /admin/budgets/{name}/limit        back to the configured limit
POST   /admin/budgets/{name}/reset        {"member": null | "alice"}: forgive this window's spend
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from spendgate.api.auth import principal_of
from spendgate.domain.roles import team_of_budget_member
from spendgate.errors import InvalidRequest
from spendgate.gateway import Gateway
from spendgate.pipeline.intake import read_body
from spendgate.services.forecasts import burn_window, views_json


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def _body(request: web.Request, gateway: Gateway, fields: set[str]) -> dict[str, Any]:
    """The JSON object a change sent, holding no field but ``fields``: a misspelt field
    (``{"memberz": "dana"}``) is a 400, never a change made as if it were left out."""
    raw = await read_body(request, gateway.config.server)
    if not raw:
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    unknown = sorted(set(body) - fields)
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s): {', '.join(unknown)}; send {' and/or '.join(sorted(fields))}",
            param=unknown[0],
        )
    return body


async def list_budgets(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    views = await gateway.budget_service.overview(request.query.get("name"))
    principal = principal_of(request)
    if not principal.org_wide:  # a team's principal: its team's budgets and members only
        teams = {key.id: key.team for key in await gateway.keys.list(include_revoked=True)}
        views = [
            view
            for view in views
            if principal.sees(team_of_budget_member(view.budget, view.member, teams))
        ]
    window = burn_window(gateway.config.alerts.burn_window_s)
    return _json({"data": await views_json(gateway.storage, views, gateway.clock.now(), window)})


async def set_limit(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    body = await _body(request, gateway, {"limit", "expires_at"})
    limit = body.get("limit")
    if not isinstance(limit, str | int) or isinstance(limit, bool):
        raise InvalidRequest("'limit' is required: a dollar string or a token count", param="limit")
    expires = body.get("expires_at")
    if expires is not None and not isinstance(expires, str):
        raise InvalidRequest(
            "'expires_at' must be an ISO 8601 time with a zone, or null", param="expires_at"
        )
    try:
        expires_at = datetime.fromisoformat(expires) if isinstance(expires, str) else None
    except ValueError:
        raise InvalidRequest("'expires_at' must be an ISO 8601 time", param="expires_at") from None
    override = await gateway.actions(principal_of(request)).set_limit(
        request.match_info["name"], str(limit), expires_at
    )
    return _json(
        {
            "name": override.budget,
            "limit": override.limit,
            "expires_at": override.expires_at.isoformat() if override.expires_at else None,
        }
    )


async def clear_limit(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    cleared = await gateway.actions(principal_of(request)).clear_limit(request.match_info["name"])
    return _json({"name": request.match_info["name"], "overrides_cleared": cleared})


async def reset(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    body = await _body(request, gateway, {"member"})
    member = body.get("member")
    if member is not None and not isinstance(member, str):
        raise InvalidRequest("'member' must be a string or null", param="member")
    actions = gateway.actions(principal_of(request))
    counters = await actions.reset_budget(request.match_info["name"], member)
    return _json({"name": request.match_info["name"], "member": member, "counters_reset": counters})
