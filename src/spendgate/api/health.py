"""Liveness and readiness. ``/readyz`` asks every store whether it can serve now: a load
balancer stops sending traffic to a gateway whose storage fails (it would refuse it all)."""

from __future__ import annotations

import logging
import os

from aiohttp import web

from spendgate.gateway import Gateway

log = logging.getLogger("spendgate.health")


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        gateway = request.app[gateway_key]
        if gateway.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not gateway.upstream.started:
            return web.json_response({"status": "starting"}, status=503)
        stores = await gateway.storage.check_each()
        named = {name: "ok" if error is None else "unavailable" for name, error in stores.items()}
        failed = {name: error for name, error in stores.items() if error is not None}
        if failed:
            log.warning("not ready: storage failed", extra={"error": str(failed)})
            return web.json_response({"status": "storage unavailable", "stores": named}, status=503)
        answer: dict[str, object] = {
            "status": "ready",
            "stores": named,
            "models": len(gateway.models),
            "inflight": gateway.inflight,
        }
        if gateway.fleet is not None:  # one of `serve --workers N`: which one answered
            answer["worker"] = gateway.fleet.index
            answer["pid"] = os.getpid()
        return web.json_response(answer)

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
