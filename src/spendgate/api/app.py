"""The app factory: routes of the OpenAI, Anthropic and Gemini surfaces, health and admin."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from spendgate.api import admin, health, me, metrics, models, reload, ui
from spendgate.api.errors import error_middleware, security_headers
from spendgate.dialects import SURFACES, SurfaceSpec
from spendgate.gateway import Gateway
from spendgate.pipeline.proxy import handle

GATEWAY: web.AppKey[Gateway] = web.AppKey("gateway", Gateway)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _proxy(spec: SurfaceSpec) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = request.app[GATEWAY]
        task = asyncio.current_task()
        gateway.requests.enter(task)
        try:
            return await handle(gateway, request, spec)
        finally:
            gateway.requests.leave(task)

    return handler


async def _websocket_refused(request: web.Request) -> web.Response:
    # Codex tries a WebSocket upgrade on GET /v1/responses first; 426 sends it to SSE.
    return web.Response(status=426, text="Use POST /v1/responses (server-sent events).")


def create_app(gateway: Gateway, *, manage_lifecycle: bool = True) -> web.Application:
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=gateway.config.server.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app.on_response_prepare.append(security_headers)
    for spec in SURFACES:
        for path in spec.routes:
            app.router.add_post(path, _proxy(spec))
    app.router.add_get("/v1/responses", _websocket_refused)
    app.router.add_get("/v1/models", models.list_models(GATEWAY))
    app.router.add_get("/v1beta/models", models.list_models(GATEWAY))
    app.router.add_get("/v1/models/{model:.+}", models.get_model(GATEWAY))
    app.router.add_get("/v1beta/models/{model:.+}", models.get_model(GATEWAY))
    app.router.add_post("/v1/models/{model:.+}", models.post_model)
    app.router.add_post("/v1beta/models/{model:.+}", models.post_model)
    health.add_routes(app, GATEWAY)
    admin.add_routes(app, GATEWAY)
    reload.add_routes(app, GATEWAY)
    metrics.add_routes(app, GATEWAY)
    me.add_routes(app, GATEWAY)
    ui.add_routes(app, GATEWAY)
    if manage_lifecycle:
        app.on_startup.append(_start)
        app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    await app[GATEWAY].start()


async def _stop(app: web.Application) -> None:
    await app[GATEWAY].stop()
