"""Sending an alert to a webhook over real HTTP (`spendgate.services.alert_channels`)."""

from __future__ import annotations

import aiohttp
import pytest
from aiohttp import web

from spendgate.config.alerts import ChannelConfig, SmtpConfig
from spendgate.services.alert_channels import DeliveryFailed, send


async def _serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}"


async def test_a_webhook_that_redirects_is_a_failed_delivery_not_followed() -> None:
    """The receiver answers 307 to another host: following it sent the channel's secret
    headers (``headers_env``: a pager's token) and the alert there."""
    elsewhere: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        elsewhere.append(dict(request.headers))
        return web.Response(status=204)

    other_app = web.Application()
    other_app.router.add_post("/collect", record)
    other, other_url = await _serve(other_app)

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(other_url + "/collect")

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", moved)
    receiver, receiver_url = await _serve(receiver_app)
    channel = ChannelConfig(
        kind="webhook", url=receiver_url + "/hook", headers_env={"authorization": "PAGER_TOKEN"}
    )
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(DeliveryFailed, match="HTTP 307"):
                await send(
                    channel,
                    {"title": "budget at 80 %", "text": "ml-monthly"},
                    http=http,
                    smtp=SmtpConfig(),
                    env={"PAGER_TOKEN": "Bearer pager-secret"},
                )
    finally:
        await receiver.cleanup()
        await other.cleanup()
    assert elsewhere == []
