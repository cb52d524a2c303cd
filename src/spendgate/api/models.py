"""``GET /v1/models`` (and Gemini's ``GET /v1beta/models``): the models the caller's key
may use, in the caller's dialect."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from spendgate import dialects
from spendgate.domain.budgets import Caller
from spendgate.errors import AuthenticationFailed
from spendgate.events import AuthFailed
from spendgate.gateway import Gateway
from spendgate.pipeline.exchange import new_request_id
from spendgate.pipeline.intake import REQUEST_ID_KEY, credential

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def list_models(gateway_key: web.AppKey[Gateway]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = request.app[gateway_key]
        adapter = dialects.for_request(request.path, request.headers)
        request[REQUEST_ID_KEY] = request_id = new_request_id()
        try:
            key = await gateway.keys.authenticate(credential(request, in_query=True))
        except AuthenticationFailed as failed:  # a listing served is not logged; a bad key is
            surface = f"{adapter.dialect.value}.models"
            gateway.events.emit(AuthFailed(request_id, surface, failed.message))
            raise
        models = gateway.models
        caller = Caller(key=key, org=gateway.config.org_of_team(key.team) or key.org, model="")
        aliases = {
            alias: model
            for alias, model in gateway.router.aliases(caller, adapter.dialect).items()
            if (key.may_use(model) or key.may_use(alias)) and models.get(alias) is None
        }
        return web.json_response(adapter.model_list(models.visible_to(key), aliases))

    return handler
