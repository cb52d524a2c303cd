"""The one upstream HTTP client: a pooled connection per provider host, the provider's
auth strategy applied to each request, and transport failures turned into four outcomes
the pipeline knows how to charge (`Unreachable` and `ConnectTimeout`: nothing was sent;
`ReadTimeout` and `Broken`: the provider may have billed).

aiohttp is the transport (chosen by measurement, docs/benchmarks.md); nothing outside this
module sees its exceptions or its response type.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Mapping

import aiohttp

from spendgate.upstream.auth import Outgoing
from spendgate.upstream.providers import Provider


class UpstreamFailure(Exception):
    """The request could not be completed with the provider."""

    reached = True  # whether the provider may have received (and billed) the request


class Unreachable(UpstreamFailure):
    """The connection was refused or could not be made: nothing was sent. Its message is
    the operator's (it names the provider's address); `reason` is what a client is told."""

    reached = False

    def __init__(self, detail: str, reason: str = "the connection failed") -> None:
        super().__init__(detail)
        self.reason = reason


def _reason(error: OSError) -> str:
    """Why a connection could not be made, naming no host, address or port: the provider
    may be a server on the operator's private network."""
    if isinstance(error, ssl.SSLError | ssl.CertificateError):
        return "the TLS handshake failed"
    if isinstance(error, socket.gaierror):
        return "its host name did not resolve"
    if isinstance(error, ConnectionRefusedError):
        return "the connection was refused"
    return "the connection failed"


class ConnectTimeout(UpstreamFailure):
    """No connection within the connect timeout: nothing was sent."""

    reached = False


class ReadTimeout(UpstreamFailure):
    """The provider sent nothing for the read timeout, before or during its answer."""


class Broken(UpstreamFailure):
    """The connection broke before or during the answer."""


_BROKEN = (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError)


class UpstreamResponse:
    """A provider's answer: status and headers at once, the body read whole or in chunks."""

    __slots__ = ("_raw",)

    def __init__(self, raw: aiohttp.ClientResponse) -> None:
        self._raw = raw

    @property
    def status(self) -> int:
        return self._raw.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._raw.headers

    @property
    def content_type(self) -> str:
        return self._raw.content_type

    async def read(self) -> bytes:
        try:
            return await self._raw.read()
        except TimeoutError:
            raise ReadTimeout("the provider stopped sending its answer") from None
        except _BROKEN as exc:
            raise Broken(f"the provider broke off its answer: {type(exc).__name__}") from None

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (a stream), in whatever pieces the network delivers."""
        try:
            async for chunk in self._raw.content.iter_any():
                yield chunk
        except TimeoutError:
            raise ReadTimeout("upstream timeout mid-stream") from None
        except _BROKEN as exc:
            raise Broken(f"upstream broke mid-stream: {type(exc).__name__}") from None

    def close(self) -> None:
        """Drop the connection now (stop paying for an answer nobody will read)."""
        self._raw.close()

    def release(self) -> None:
        """Give the connection back to the pool (or close it if the body is unread)."""
        self._raw.release()


class UpstreamClient:
    def __init__(self, *, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._connect = connect_timeout_s
        self._read = read_timeout_s
        self._session: aiohttp.ClientSession | None = None

    @property
    def started(self) -> bool:
        return self._session is not None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=60),
            timeout=aiohttp.ClientTimeout(total=None, connect=self._connect, sock_read=self._read),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(
        self,
        provider: Provider,
        path: str,
        body: bytes,
        client_headers: Mapping[str, str],
        *,
        query: str = "",
        model: str = "",
    ) -> UpstreamResponse:
        """POST ``body`` to the provider's URL for a gateway ``path``, with the client's
        passable headers and the provider's credential. ``model``: the upstream model, which
        an Azure OpenAI deployment URL names."""
        if self._session is None:
            raise RuntimeError("the upstream client has not been started")
        request = Outgoing(
            method="POST",
            url=provider.url_for(path, query, model),
            headers=provider.request_headers(client_headers),
            body=body,
        )
        provider.auth.apply(request)
        try:
            # A redirect is never followed: aiohttp would send the provider's secret (when
            # not in `Authorization`) and the prompt on to whatever host it names.
            raw = await self._session.post(
                request.url, data=body, headers=request.headers, allow_redirects=False
            )
        except aiohttp.ClientConnectorError as exc:
            raise Unreachable(str(exc.os_error), _reason(exc.os_error)) from None
        except aiohttp.ConnectionTimeoutError:  # a TimeoutError too: caught first
            raise ConnectTimeout("the connection timed out") from None
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            raise ReadTimeout("the provider did not answer in time") from None
        except _BROKEN as exc:
            raise Broken(f"upstream broke: {exc}") from None
        return UpstreamResponse(raw)
