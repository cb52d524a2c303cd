"""The admin HTTP API, behind an admin credential (``Authorization: Bearer <token>``): the
environment's admin token or an admin token with a role (`spendgate.api.auth`; a team
admin's and a team viewer's listings show their team only, changes outside it are refused).

POST /admin/keys                 create a key (the secret is in this response only)
GET  /admin/keys                 list keys (?include_revoked=true)
GET  /admin/keys/{id}            one key
PATCH /admin/keys/{id}           change its labels (name, team, user, service, tags,
                                 allowed_models, expires_at) and its own budget and limits
                                 (budget_usd, budget_period, limit_requests, limit_tokens);
                                 same id, same secret
POST /admin/keys/{id}/revoke     revoke now
POST /admin/keys/{id}/rotate     new secret, same identity; the old secret stops working
GET  /admin/usage                spend grouped by team/service/user/key/model/org/provider
                                 (?group_by=team&period=7d&top=15&format=json|csv)
GET  /admin/blocks               what budgets, limits and breakers refused (?period=today)
GET  /admin/savings              what routing saved, by team or service, and what shadow rules
                                 would save (?group_by=team|service&period=month&format=json|csv)
GET  /admin/budgets              budgets and rate limits, with their current use
PUT  /admin/budgets/{name}/limit, DELETE /admin/budgets/{name}/limit, POST .../reset
GET  /admin/loops                detected loops blocked now (?all=true: also those whose
                                 block ended but whose strikes are remembered)
POST /admin/loops/{loop_id}/release   unblock a loop now and forget its strikes
POST /admin/tokens, GET /admin/tokens, POST /admin/tokens/{token_id}/revoke   (api/tokens.py)
GET  /admin/audit                every admin change: who, what, when, before/after (api/audit.py)
GET  /admin/alerts               the alert delivery log (?limit=100&status=pending|delivered|failed)
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from aiohttp import web

from spendgate.api import alerts, audit, budgets, tokens
from spendgate.api.auth import AdminDisabled, guard, principal_of, scoped_storage
from spendgate.api.serialize import key_json, query_flag, wants_csv
from spendgate.api.usage import blocks_handler, usage_handler
from spendgate.domain.key_limits import KeyLimits
from spendgate.domain.roles import Access
from spendgate.domain.savings import to_csv as savings_csv
from spendgate.errors import AccessDenied, InvalidRequest
from spendgate.gateway import Gateway
from spendgate.pipeline.intake import read_body
from spendgate.services.keys import LIMIT_FIELDS, KeySpec, KeyUpdate
from spendgate.services.savings import savings_report

__all__ = ["AdminDisabled", "add_routes"]

_guard = guard  # (routes that name no `Access`: org-wide reads for GET, org admin otherwise)
READ, CHANGE = Access.TEAM_READ, Access.TEAM_CHANGE  # filtered to, or checked against, a team


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


def _strings(body: dict[str, Any], name: str) -> tuple[str, ...]:
    value = body.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"'{name}' must be a list of strings", param=name)
    return tuple(value)


def _optional_str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string", param=name)
    return value


def _expiry(body: dict[str, Any]) -> datetime | None:
    value = _optional_str(body, "expires_at")
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest("'expires_at' must be an ISO 8601 time", param="expires_at") from None


_KEY_FIELDS = {"name", "user", "service", "team", "tags", "allowed_models", "expires_at"}
_KEY_FIELDS |= set(LIMIT_FIELDS)  # budget_usd, budget_period, limit_requests, limit_tokens


def _limits(body: dict[str, Any]) -> KeyLimits:
    """The key's own budget and limits in a body; a field left out is None (the period: its
    default). ``budget_usd`` may be a string ("25.00") or a number."""
    usd = body.get("budget_usd")
    if isinstance(usd, int | float) and not isinstance(usd, bool):
        usd = str(usd)
    if usd is not None and not isinstance(usd, str):
        raise InvalidRequest("'budget_usd' must be a dollar amount", param="budget_usd")
    return KeyLimits(
        budget_usd=usd,
        period=_optional_str(body, "budget_period") or KeyLimits().period,
        requests=_optional_str(body, "limit_requests"),
        tokens=_optional_str(body, "limit_tokens"),
    )


def key_spec_from_json(body: Any) -> KeySpec:
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = set(body) - _KEY_FIELDS
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0]
        )
    name = body.get("name")
    if not isinstance(name, str):
        raise InvalidRequest("'name' is required (a string)", param="name")
    return KeySpec(
        name=name,
        user=_optional_str(body, "user"),
        service=_optional_str(body, "service"),
        team=_optional_str(body, "team"),
        tags=_strings(body, "tags"),
        allowed_models=_strings(body, "allowed_models"),
        expires_at=_expiry(body),
        limits=_limits(body),
    )


def key_update_from_json(body: Any) -> KeyUpdate:
    """A PATCH body: the fields present change (null clears user, service, team and
    expires_at); the fields left out keep their values."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object.")
    unknown = set(body) - _KEY_FIELDS
    if unknown:
        raise InvalidRequest(
            f"Unknown field(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0]
        )
    if not body:
        raise InvalidRequest(f"Nothing to change: send any of {', '.join(sorted(_KEY_FIELDS))}.")
    if "name" in body and not isinstance(body["name"], str):
        raise InvalidRequest("'name' must be a string", param="name")
    return KeyUpdate(
        changed=frozenset(body),
        name=body.get("name", ""),
        user=_optional_str(body, "user"),
        service=_optional_str(body, "service"),
        team=_optional_str(body, "team"),
        tags=_strings(body, "tags"),
        allowed_models=_strings(body, "allowed_models"),
        expires_at=_expiry(body),
        limits=_limits(body),
    )


async def _json_body(request: web.Request, gateway: Gateway) -> Any:
    try:
        return orjson.loads(await read_body(request, gateway.config.server))
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"The request body is not valid JSON: {exc}") from None


async def _update_key(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    update = key_update_from_json(await _json_body(request, gateway))
    actions = gateway.actions(principal_of(request))
    key = await actions.update_key(request.match_info["key_id"], update)
    return _json(key_json(key, gateway.clock.now()))


async def _create_key(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    body = await _json_body(request, gateway)
    issued = await gateway.actions(principal_of(request)).create_key(key_spec_from_json(body))
    return _json({**key_json(issued.key, gateway.clock.now()), "key": issued.secret}, status=201)


async def _list_keys(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    include = query_flag(request.query, "include_revoked")
    keys = await gateway.keys.list(include_revoked=include)
    principal = principal_of(request)
    shown = [key for key in keys if principal.sees(key.team)]
    return _json({"data": [key_json(key, gateway.clock.now()) for key in shown]})


async def _show_key(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    key = await gateway.keys.get(request.match_info["key_id"])
    principal = principal_of(request)
    if not principal.sees(key.team):
        raise AccessDenied(principal.outside(f"key {key.id}", key.team))
    return _json(key_json(key, gateway.clock.now()))


async def _revoke_key(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    key = await gateway.actions(principal_of(request)).revoke_key(request.match_info["key_id"])
    return _json(key_json(key, gateway.clock.now()))


async def _rotate_key(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    actions = gateway.actions(principal_of(request))
    issued = await actions.rotate_key(request.match_info["key_id"])
    return _json({**key_json(issued.key, gateway.clock.now()), "key": issued.secret})


async def _savings(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    query = request.query
    csv = wants_csv(query)
    report = await savings_report(
        scoped_storage(request, gateway),
        gateway.clock,
        group_by=query.get("group_by", "team"),
        period=query.get("period", "month"),
        book=gateway.budgets,
    )
    if csv:
        return web.Response(
            text=savings_csv(report.savings.groups),
            content_type="text/csv",
            headers={
                "content-disposition": (
                    f'attachment; filename="savings-{report.group_by.value}.csv"'
                )
            },
        )
    return _json(report.to_json())


async def _list_loops(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    ended = query_flag(request.query, "all")
    service = gateway.loop_service
    blocks = await service.blocks(ended=ended)
    principal = principal_of(request)
    if not principal.org_wide:
        teams = {key.id: key.team for key in await gateway.keys.list(include_revoked=True)}
        blocks = [block for block in blocks if principal.sees(teams.get(block.key_id))]
    now = gateway.clock.now()
    data = [block.to_json(now, enforced=service.enforces(block)) for block in blocks]
    return _json({"data": data})


async def _release_loop(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    actions = gateway.actions(principal_of(request))
    block = await actions.release_loop(request.match_info["loop_id"])
    return _json({**block.to_json(gateway.clock.now()), "released": True})


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    router = app.router
    router.add_post("/admin/keys", _guard(gateway_key, _create_key, CHANGE))
    router.add_get("/admin/keys", _guard(gateway_key, _list_keys, READ))
    router.add_get("/admin/keys/{key_id}", _guard(gateway_key, _show_key, READ))
    router.add_patch("/admin/keys/{key_id}", _guard(gateway_key, _update_key, CHANGE))
    router.add_post("/admin/keys/{key_id}/revoke", _guard(gateway_key, _revoke_key, CHANGE))
    router.add_post("/admin/keys/{key_id}/rotate", _guard(gateway_key, _rotate_key, CHANGE))
    router.add_get("/admin/usage", _guard(gateway_key, usage_handler, READ))
    router.add_get("/admin/blocks", _guard(gateway_key, blocks_handler, READ))
    router.add_get("/admin/savings", _guard(gateway_key, _savings, READ))
    router.add_get("/admin/budgets", _guard(gateway_key, budgets.list_budgets, READ))
    router.add_put("/admin/budgets/{name}/limit", _guard(gateway_key, budgets.set_limit, CHANGE))
    router.add_delete(
        "/admin/budgets/{name}/limit", _guard(gateway_key, budgets.clear_limit, CHANGE)
    )
    router.add_post("/admin/budgets/{name}/reset", _guard(gateway_key, budgets.reset, CHANGE))
    router.add_get("/admin/loops", _guard(gateway_key, _list_loops, READ))
    router.add_post("/admin/loops/{loop_id}/release", _guard(gateway_key, _release_loop, CHANGE))
    tokens.add_routes(app, gateway_key)
    audit.add_routes(app, gateway_key)
    # the delivery log spans every team: org-wide readers (the default for GET)
    router.add_get("/admin/alerts", _guard(gateway_key, alerts.list_alerts))
