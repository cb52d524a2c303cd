"""How a request proves itself to a provider: one strategy per scheme.

A strategy adds its credential to an outgoing request just before it is sent; it sees the
method, URL and body as well, so a signing scheme (AWS SigV4 for Bedrock) fits the same
seam as a static header. Secrets live only here and in the outgoing request: never in a
log line or a repr.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from spendgate.config.schema import AuthScheme


@dataclass(slots=True)
class Outgoing:
    """A request about to go upstream, for a strategy to authenticate."""

    method: str
    url: str
    headers: dict[str, str]
    body: bytes


class Auth(Protocol):
    def apply(self, request: Outgoing) -> None: ...


@dataclass(frozen=True, slots=True)
class NoAuth:
    """A provider that needs no credential (a local server such as Ollama)."""

    def apply(self, request: Outgoing) -> None:
        return None


@dataclass(frozen=True, slots=True)
class HeaderAuth:
    """The secret in one header, with an optional scheme prefix (``Bearer ``)."""

    header: str
    secret: str = field(repr=False)
    prefix: str = ""

    def apply(self, request: Outgoing) -> None:
        request.headers[self.header] = self.prefix + self.secret


def auth_for(scheme: AuthScheme, secret: str | None) -> Auth:
    if not secret:
        return NoAuth()
    if scheme is AuthScheme.X_API_KEY:
        return HeaderAuth("x-api-key", secret)
    if scheme is AuthScheme.API_KEY:
        return HeaderAuth("api-key", secret)
    if scheme is AuthScheme.X_GOOG_API_KEY:
        return HeaderAuth("x-goog-api-key", secret)
    return HeaderAuth("authorization", secret, prefix="Bearer ")
