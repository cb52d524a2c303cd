"""Liveness and readiness."""

from __future__ import annotations

from aiohttp import web

from spendgate.gateway import Gateway


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(request: web.Request) -> web.Response:
        gateway = request.app[gateway_key]
        if gateway.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not gateway.upstream.started:
            return web.json_response({"status": "starting"}, status=503)
        return web.json_response(
            {"status": "ready", "models": len(gateway.models), "inflight": gateway.inflight}
        )

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
