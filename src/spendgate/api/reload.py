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
from spendgate.domain.roles import Access, Principal, Role
from spendgate.errors import GatewayError, InvalidRequest, SpendgateError, StorageError
from spendgate.gateway import Gateway, ReloadResult

log = logging.getLogger("spendgate.reload")

PATH = "/admin/reload"


def _digest(gateway: Gateway) -> str:
    """A fingerprint of the config in force (the audit log's before/after: never a value)."""
    return hashlib.sha256(gateway.config.model_dump_json().encode()).hexdigest()


SIGNAL = Principal("signal:SIGHUP", Role.ORG_ADMIN)  # whoever may signal the process


async def audited_reload(gateway: Gateway, principal: Principal) -> ReloadResult:
    """`Gateway.reload_source`, written to the audit log (the config's SHA-256 before and
    after, and what the reload put in force) once it succeeded; raises as it does. The new
    config is in force whether or not its entry could be written (logged if not)."""
    before = _digest(gateway)
    result = await gateway.reload_source()
    try:
        await gateway.audit_service.record(
            principal,
            AuditAction.CONFIG_RELOAD,
            gateway.config_source or "config",
            before={"config_sha256": before},
            after={**result.to_json(), "config_sha256": _digest(gateway)},
        )
    except StorageError as exc:
        log.error(
            "config reloaded; its audit entry was not written",
            extra={"source": gateway.config_source, "error": str(exc)},
        )
    return result


async def reload_config(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    gateway.audit_service.require()
    try:
        result = await audited_reload(gateway, principal_of(request))
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
    app.router.add_post(PATH, guard(gateway_key, reload_config, Access.ORG))
