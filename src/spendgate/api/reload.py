"""POST /admin/reload: re-read the config file and put it in force without a restart.

The same as sending the process SIGHUP, but with an answer: 200 with what is now in force,
or 400 with the config problem (file, key path, rule) while the running config stays.
"""

from __future__ import annotations

import hashlib
import logging

import orjson
from aiohttp import web

from spendgate.api.auth import guard, principal_of
from spendgate.domain.audit import AuditAction
from spendgate.domain.roles import Access
from spendgate.errors import GatewayError, InvalidRequest, SpendgateError
from spendgate.gateway import Gateway

log = logging.getLogger("spendgate.reload")

PATH = "/admin/reload"


def _digest(gateway: Gateway) -> str:
    """A fingerprint of the config in force (the audit log's before/after: never a value)."""
    return hashlib.sha256(gateway.config.model_dump_json().encode()).hexdigest()


async def reload_config(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    audit = gateway.audit_service
    audit.require()
    before = _digest(gateway)
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
    await audit.record(
        principal_of(request),
        AuditAction.CONFIG_RELOAD,
        gateway.config_source or "config",
        before={"config_sha256": before},
        after={**result.to_json(), "config_sha256": _digest(gateway)},
    )
    return web.Response(body=orjson.dumps(result.to_json()), content_type="application/json")


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    app.router.add_post(PATH, guard(gateway_key, reload_config, Access.ORG))
