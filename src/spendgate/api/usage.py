"""``GET /admin/usage``: spend by group over a period, as JSON or CSV."""

from __future__ import annotations

import orjson
from aiohttp import web

from spendgate.api.auth import scoped_storage
from spendgate.api.serialize import wants_csv
from spendgate.domain.reports import to_csv
from spendgate.errors import InvalidRequest
from spendgate.gateway import Gateway
from spendgate.services.reports import (
    blocks_report,
    series_csv,
    usage_report,
    usage_series_report,
)


async def usage_handler(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    query = request.query
    csv = wants_csv(query)
    if "bucket" in query:  # a time series for charts (docs/admin-api.md)
        series = await usage_series_report(
            scoped_storage(request, gateway),  # a team's principal: its team's rows only
            gateway.clock,
            group_by=query.get("group_by", "team"),
            period=query.get("period", "month"),
            bucket=query["bucket"],
        )
        if csv:
            name = f"usage-{series['group_by']}-{series['bucket']}.csv"
            return web.Response(
                text=series_csv(series),
                content_type="text/csv",
                headers={"content-disposition": f'attachment; filename="{name}"'},
            )
        return web.Response(body=orjson.dumps(series), content_type="application/json")
    try:
        top = int(query.get("top", "15"))
    except ValueError:
        raise InvalidRequest("top must be an integer", param="top") from None
    report = await usage_report(
        scoped_storage(request, gateway),  # a team's principal: its team's rows only
        gateway.clock,
        group_by=query.get("group_by", "team"),
        period=query.get("period", "month"),
        top=top,
    )
    if csv:
        return web.Response(
            text=to_csv(report.groups),
            content_type="text/csv",
            headers={
                "content-disposition": f'attachment; filename="usage-{report.group_by.value}.csv"'
            },
        )
    return web.Response(body=orjson.dumps(report.to_json()), content_type="application/json")


async def blocks_handler(request: web.Request, gateway: Gateway) -> web.StreamResponse:
    report = await blocks_report(
        scoped_storage(request, gateway), gateway.clock, period=request.query.get("period", "today")
    )
    return web.Response(body=orjson.dumps(report), content_type="application/json")
