"""A bare pass-through proxy, the floor every gateway is measured against (`shared/PEERS.md`):
aiohttp on uvloop, no auth, no metering, no policy; the request body and the answer pass
through untouched, streams chunk by chunk.

    python -m benchmarks.passthrough --port 9000 --upstream http://127.0.0.1:8000
"""

from __future__ import annotations

import argparse

import aiohttp
import uvloop
from aiohttp import web

DROP = {"host", "content-length", "transfer-encoding", "connection"}


def app(upstream: str, key: str) -> web.Application:
    async def start(application: web.Application) -> None:
        application["client"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def stop(application: web.Application) -> None:
        await application["client"].close()

    async def proxy(request: web.Request) -> web.StreamResponse:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in DROP}
        headers["authorization"] = f"Bearer {key}"
        client: aiohttp.ClientSession = request.app["client"]
        async with client.post(upstream + request.path, data=await request.read(),
                               headers=headers) as answer:  # fmt: skip
            response = web.StreamResponse(status=answer.status)
            response.content_type = answer.content_type
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    application = web.Application()
    application.on_startup.append(start)
    application.on_cleanup.append(stop)
    application.router.add_post("/{path:.*}", proxy)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--key", default="sk-sim")
    args = parser.parse_args()
    web.run_app(app(args.upstream, args.key), host="127.0.0.1", port=args.port,
                print=None, access_log=None, loop=uvloop.new_event_loop())  # fmt: skip


if __name__ == "__main__":
    main()
