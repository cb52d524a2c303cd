"""``GET /v1/models`` (and Gemini's ``GET /v1beta/models``): the models the caller's key
may use, in the caller's dialect; ``GET /v1/models/{model}`` (``/v1beta/models/{model}``)
one of them, as the SDKs' ``models.retrieve`` / ``models.get`` ask for it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from spendgate import dialects
from spendgate.api.errors import MethodNotAllowed
from spendgate.dialects import SURFACES
from spendgate.domain.budgets import Caller
from spendgate.errors import AuthenticationFailed, ModelNotFound, NotFound
from spendgate.events import AuthFailed
from spendgate.gateway import Gateway
from spendgate.pipeline.exchange import new_request_id
from spendgate.pipeline.intake import REQUEST_ID_KEY, credential

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


async def _listing(gateway: Gateway, request: web.Request) -> tuple[dialects.DialectAdapter, Any]:
    """The caller's dialect and its listing of the models the caller's key may use."""
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
    return adapter, adapter.model_list(models.visible_to(key), aliases)


def list_models(gateway_key: web.AppKey[Gateway]) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        _, listing = await _listing(request.app[gateway_key], request)
        return web.json_response(listing)

    return handler


# Gemini's methods served (``POST /v1beta/models/{model}:<method>``).
_GEMINI_METHODS = frozenset(
    route.rsplit(":", 1)[1] for spec in SURFACES for route in spec.routes if "/models/{" in route
)


def _gemini_method(name: str) -> str | None:
    """The method a ``models/...`` path names after its last colon, if it is one served
    (a fine-tuned OpenAI model's name has colons too: ``ft:gpt-4o:org::id``)."""
    method = name.rsplit(":", 1)[-1] if ":" in name else None
    return method if method in _GEMINI_METHODS else None


def get_model(gateway_key: web.AppKey[Gateway]) -> Handler:
    """One model of the listing; one the key may not use is not found, as it is not listed.
    A Gemini method asked for with GET is a wrong method (405), not a missing model."""

    async def handler(request: web.Request) -> web.StreamResponse:
        name = request.match_info["model"]
        if _gemini_method(name) is not None:
            raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}; use POST.")
        adapter, listing = await _listing(request.app[gateway_key], request)
        entry = adapter.model_entry(listing, name)
        if entry is None:
            raise ModelNotFound(
                f"The model '{name}' does not exist on this gateway. "
                "GET /v1/models lists the models your key may use.",
                param="model",
            )
        return web.json_response(entry)

    return handler


async def post_model(request: web.Request) -> web.StreamResponse:
    """``POST`` on a ``models/...`` path that is no method served: an unknown Gemini method
    (``:embedContent``) is not found (404); a model itself takes no POST (405)."""
    name = request.match_info["model"]
    if ":" in name:
        method = name.rsplit(":", 1)[1]
        raise NotFound(
            f"Method '{method}' is not served by this gateway (served: "
            f"{', '.join(sorted(_GEMINI_METHODS))})."
        )
    raise MethodNotAllowed(f"{request.method} is not allowed on {request.path}.")
