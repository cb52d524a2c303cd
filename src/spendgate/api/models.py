"""``GET /v1/models``: the models the caller's key may use, in the caller's dialect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from spendgate.domain.budgets import Caller
from spendgate.errors import Dialect
from spendgate.gateway import Gateway
from spendgate.pipeline.proxy import credential

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def list_models(gateway_key: web.AppKey[Gateway]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = request.app[gateway_key]
        key = await gateway.keys.authenticate(credential(request))
        routes = gateway.models.visible_to(key)
        caller = Caller(key=key, org=gateway.config.org_of_team(key.team) or key.org, model="")
        if "anthropic-version" in request.headers:
            aliases = gateway.router.aliases(caller, Dialect.ANTHROPIC)
            data = [
                {
                    "type": "model",
                    "id": route.name,
                    "display_name": route.name,
                    "created_at": "1970-01-01T00:00:00Z",
                }
                for route in routes
                if route.dialect is Dialect.ANTHROPIC
            ] + [
                {
                    "type": "model",
                    "id": alias,
                    "display_name": f"{alias} (now {model})",
                    "created_at": "1970-01-01T00:00:00Z",
                }
                for alias, model in sorted(aliases.items())
                if (key.may_use(model) or key.may_use(alias)) and gateway.models.get(alias) is None
            ]
            return web.json_response(
                {
                    "data": data,
                    "has_more": False,
                    "first_id": data[0]["id"] if data else None,
                    "last_id": data[-1]["id"] if data else None,
                }
            )
        aliases = gateway.router.aliases(caller, Dialect.OPENAI)
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": route.name,
                        "object": "model",
                        "created": 0,
                        "owned_by": route.primary.provider,
                    }
                    for route in routes
                ]
                + [
                    {"id": alias, "object": "model", "created": 0, "owned_by": "spendgate"}
                    for alias, model in sorted(aliases.items())
                    if (key.may_use(model) or key.may_use(alias))
                    and gateway.models.get(alias) is None
                ],
            }
        )

    return handler
