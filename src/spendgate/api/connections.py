"""Bounds on client connections: how long a request's head may take to arrive, how many
connections one address may hold open, and (through aiohttp's own keep-alive timer) how
long an idle connection is kept.

aiohttp closes an idle keep-alive connection after ``keepalive_timeout``, and a connection
that has sent nothing at all is idle; but a connection that sends the head of a request a
byte at a time (slowloris) is never idle and was kept for as long as it trickled. Here each
connection is served by `GuardedHandler`, aiohttp's request handler plus two checks:

* the first byte of a request head starts a timer; the head must be complete within
  ``server.request_header_timeout_s``, else the connection is closed;
* at most ``server.max_connections_per_address`` connections per client address; one more
  is answered ``503`` and closed at once;
* a client that stops reading its answer: once the connection's send buffer is full
  (the transport pauses writing), the client must take some of it within
  ``server.client_send_timeout_s``, else the connection is dropped (nginx's
  ``send_timeout``). The request then ends as a client that disconnected: its row is
  written and its reservation settled, instead of being held for as long as the client
  holds the socket open without reading.

The request body's own timeout is applied where the body is read
(`spendgate.pipeline.intake.read_json_object`). These hooks use aiohttp's request handler
(`aiohttp.web_protocol.RequestHandler`) as subclass: the tests of
``tests/e2e/test_connections.py`` fail if a new aiohttp changes what they rely on.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any, cast

import orjson
from aiohttp import web
from aiohttp.http_exceptions import ContentEncodingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from spendgate.errors import GatewayError
from spendgate.pipeline.intake import unsupported_encoding

log = logging.getLogger("spendgate.connections")

BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: text/plain\r\n"
    b"connection: close\r\n"
    b"content-length: 50\r\n\r\n"
    b"Too many connections from this address; try later."
)


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    per_address: int
    send_timeout_s: float = 60.0


class GuardedHandler(RequestHandler):
    """One client connection: aiohttp's handler, with a deadline on each request head and
    a count of connections per address."""

    # (no __slots__: aiohttp's handler has a __dict__ of its own attributes)

    def __init__(self, manager: GuardedServer, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = manager.guard
        self._address: str | None = None
        self._head_since: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the last request's, while it arrives
        self._made = False
        self._send_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else None
        if address is not None and not self._guard.admit(address):
            log.warning("connection refused", extra={"address": address, "reason": "per-address"})
            if isinstance(transport, asyncio.WriteTransport):
                transport.write(BUSY)
            transport.close()
            return
        self._address = address
        self._made = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        self._stop_head_timer()
        self._stop_send_timer()
        if self._made:
            super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The send buffer is full: the client has that long to take some of it."""
        super().pause_writing()
        self._stop_send_timer()
        self._send_timer = self._loop.call_later(
            self._guard.limits.send_timeout_s, self._send_overdue
        )

    def resume_writing(self) -> None:
        self._stop_send_timer()
        super().resume_writing()

    def _send_overdue(self) -> None:
        self._send_timer = None
        if not self.writing_paused or self.transport is None:
            return
        log.info(
            "connection closed",
            extra={"address": self._address, "reason": "client not reading its answer in time"},
        )
        self.transport.abort()  # the pending write fails: the request ends as disconnected

    def _stop_send_timer(self) -> None:
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    def data_received(self, data: bytes) -> None:
        if not self._made:  # refused in connection_made
            return
        reading_heads = self._payload_parser is None and not self._upgraded
        # Bytes of a body still arriving, read apart from its head (clients write the two
        # in separate sends), are no new head: the body has a timeout of its own where it
        # is read, and its answer may take far longer than a head may (a long stream).
        arriving = self._body if self._body is not None and not self._body.is_eof() else None
        before = self._request_count
        super().data_received(data)
        if not reading_heads:
            return
        if self._request_count > before:  # a whole head arrived: its request is served
            self._head_since = None
            self._stop_head_timer()
            body = self._messages[-1][1] if self._messages else None
            self._body = None if body is None or body.is_eof() else body
        elif arriving is not None:
            if arriving.is_eof():
                self._body = None  # whole: the next bytes start a head
        elif data and self._head_since is None:  # the first bytes of a new head
            loop = self._loop
            self._head_since = loop.time()
            self._head_timer = loop.call_later(
                self._guard.limits.header_timeout_s, self._head_overdue
            )

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A body compressed in a way aiohttp cannot decode here (brotli or zstd without
        their libraries) fails while its head is parsed, before any route is chosen: it is
        answered `415` in a JSON shape both SDK families read (the dialect is not known
        yet), instead of aiohttp's plain-text `400`. Other protocol errors are aiohttp's."""
        if not isinstance(exc, ContentEncodingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        log.info("request refused", extra={"address": self._address, "reason": exc.message})
        named = re.search(r"\((\w+)\)", exc.message)  # "... brotli (br). Please install ..."
        error = unsupported_encoding(named.group(1) if named else None)
        response = web.Response(
            status=error.status,
            body=orjson.dumps(neutral_error_body(error)),
            content_type="application/json",
            headers=error.headers(),
        )
        response.force_close()
        return response

    def _head_overdue(self) -> None:
        self._head_timer = None
        if self._head_since is None:
            return
        log.info(
            "connection closed",
            extra={"address": self._address, "reason": "request head not complete in time"},
        )
        self.force_close()

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None


def neutral_error_body(error: GatewayError) -> dict[str, Any]:
    """An error body both SDK families parse, for an error met before the request's route
    (and so its dialect) is known: Anthropic's envelope with OpenAI's fields inside it."""
    return {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": error.message,
            "param": error.param,
            "code": error.code,
        },
    }


class AddressGuard:
    """Open connections per client address, shared by every connection of one server."""

    def __init__(self, limits: ConnectionLimits) -> None:
        self.limits = limits
        self._open: Counter[str] = Counter()

    def admit(self, address: str) -> bool:
        if self._open[address] >= self.limits.per_address:
            return False
        self._open[address] += 1
        return True

    def release(self, address: str) -> None:
        self._open[address] -= 1
        if self._open[address] <= 0:
            del self._open[address]

    def open_from(self, address: str) -> int:
        return self._open.get(address, 0)


class GuardedServer(web.Server):
    """aiohttp's server, making `GuardedHandler` connections."""

    guard: AddressGuard

    def __call__(self) -> RequestHandler:
        return GuardedHandler(self, loop=self._loop, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An app runner whose server guards its connections (`GuardedServer`)."""

    def __init__(self, app: web.Application, limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = AddressGuard(limits)

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = GuardedServer  # the same object, making guarded handlers
        guarded = cast(GuardedServer, server)
        guarded.guard = self.guard
        return guarded
