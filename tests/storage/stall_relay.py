"""A TCP relay of a test's own in front of a real server (PostgreSQL, Redis) that can
*stall*: once stalled, it keeps every connection open and forwards nothing either way, as
a server that is slow (overloaded, swapping, behind a congested link) rather than down."""

from __future__ import annotations

import asyncio
import contextlib


class StallRelay:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stalled = False
        self.connections = 0  # accepted so far
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Listen on a free port of 127.0.0.1; the port."""
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    def stall(self) -> None:
        self.stalled = True
        self._flowing.clear()

    def resume(self) -> None:
        self.stalled = False
        self._flowing.set()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self._flowing.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _relay(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        server_in, server_out = await asyncio.open_connection(self.host, self.port)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            while data := await source.read(65536):
                await self._flowing.wait()  # stalled: held here, the connection kept open
                sink.write(data)
                await sink.drain()

        tasks = [
            asyncio.ensure_future(pipe(client_in, server_out)),
            asyncio.ensure_future(pipe(server_in, client_out)),
        ]
        self._tasks.update(tasks)
        with contextlib.suppress(ConnectionError):
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            task.cancel()
            self._tasks.discard(task)
        for writer in (client_out, server_out):
            writer.close()
