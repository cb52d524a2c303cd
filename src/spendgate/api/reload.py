"""POST /admin/reload: re-read the config file and put it in force without a restart.

The same as sending the process SIGHUP, but with an answer: 200 with what is now in force,
or 400 with the config problem (file, key path, rule) while the running config stays.
"""

from __future__ import annotations

import logging

import orjson
from aiohttp import web

from spendgate.api.admin import _guard
from spendgate.errors import GatewayError, InvalidRequest, SpendgateError
from spendgate.gateway import Gateway

log = logging.getLogger("spendgate.reload")

PATH = "/admin/reload"


async def reload_config(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    try:
        result = await gateway.reload_source()
    except GatewayError:
        raise  # e.g. shutting down (503)
    except SpendgateError as exc:
        log.error("config not reloaded", extra={"source": gateway.config_source, "error": str(exc)})
        raise InvalidRequest(
            f"{exc} (nothing was reloaded: the running config stays in force)",
            param=getattr(exc, "key", None) or None,
        ) from None
    answer = result.to_json()
    if gateway.fleet is not None:  # one worker of several: the others reload too
        answer["workers"] = await gateway.fleet.reload_others()
    return web.Response(body=orjson.dumps(answer), content_type="application/json")


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    app.router.add_post(PATH, _guard(gateway_key, reload_config))
