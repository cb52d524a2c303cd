"""Admin tokens (org admin only): create one (its secret in that response only), list them
without secrets, revoke one.

POST /admin/tokens                     {"name", "role", "team"?, "expires_at"? | "expires_in"?}
GET  /admin/tokens                     every token, revoked and expired ones included
POST /admin/tokens/{token_id}/revoke   revoke now
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from spendgate.api.auth import guard, principal_of
from spendgate.domain.roles import Access, expiry_after
from spendgate.errors import InvalidRequest
from spendgate.gateway import Gateway
from spendgate.pipeline.intake import read_body
from spendgate.services.tokens import TokenSpec, parse_role

_FIELDS = {"name", "role", "team", "expires_at", "expires_in"}


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string", param=name)
    return value


def token_spec_from_json(body: Any, now: datetime) -> TokenSpec:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = set(body) - _FIELDS
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0]
        )
    name, role = _str(body, "name"), _str(body, "role")
    if name is None:
        raise InvalidRequest("'name' is required (a string)", param="name")
    if role is None:
        raise InvalidRequest("'role' is required: org_admin, team_admin or viewer", param="role")
    at, within = _str(body, "expires_at"), _str(body, "expires_in")
    if at is not None and within is not None:
        raise InvalidRequest("give expires_at or expires_in, not both", param="expires_in")
    expires: datetime | None = None
    try:
        if at is not None:
            expires = datetime.fromisoformat(at)
        elif within is not None:
            expires = expiry_after(now, within)
    except ValueError as exc:
        param = "expires_at" if at is not None else "expires_in"
        raise InvalidRequest(f"{param}: {exc}", param=param) from None
    return TokenSpec(name=name, role=parse_role(role), team=_str(body, "team"), expires_at=expires)


async def _create(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    try:
        body = orjson.loads(await read_body(request, gateway.config.server))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None
    now = gateway.clock.now()
    spec = token_spec_from_json(body, now)
    issued = await gateway.actions(principal_of(request)).create_token(spec)
    return _json({**issued.token.to_json(now), "token": issued.secret}, status=201)


async def _list(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    now = gateway.clock.now()
    return _json({"data": [t.to_json(now) for t in await gateway.token_service.list()]})


async def _revoke(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    actions = gateway.actions(principal_of(request))
    token = await actions.revoke_token(request.match_info["token_id"])
    return _json(token.to_json(gateway.clock.now()))


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    router = app.router
    router.add_post("/admin/tokens", guard(gateway_key, _create, Access.ORG))
    router.add_get("/admin/tokens", guard(gateway_key, _list, Access.ORG))
    router.add_post("/admin/tokens/{token_id}/revoke", guard(gateway_key, _revoke, Access.ORG))
