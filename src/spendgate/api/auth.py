"""Who is calling the admin API, and whether the route allows it: the one place every
admin route (and ``/metrics``) is checked.

`credential` reads the credential a request carries (``Authorization: Bearer <token>``, or
the web dashboard's session cookie);
`authenticate` turns it into a `Principal`: the environment's admin token (the org admin's
bootstrap credential, ``server.admin_token_env``) or a stored admin token (`spendgate
tokens create`, ``POST /admin/tokens``) with its role and team. `guard` wraps a handler:
authenticate, check the route's `Access`, keep the principal on the request
(`principal_of`), and only then run it. What the handler shows or changes is then limited
to the principal's team (`spendgate.domain.roles`, `spendgate.services.audit`).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

from aiohttp import web

from spendgate.api.throttle import address_of, attempts_for, refuse_if_blocked
from spendgate.domain.roles import TOKEN_PREFIX, Access, Principal, Role
from spendgate.errors import AccessDenied, AuthenticationFailed, PermissionDenied
from spendgate.gateway import Gateway
from spendgate.storage import Storage
from spendgate.storage.team_view import team_storage

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Inner = Callable[[web.Request, Gateway], Awaitable[web.StreamResponse]]

ENV_PRINCIPAL = Principal("env", Role.ORG_ADMIN)  # the environment's admin token
PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)


class AdminDisabled(PermissionDenied):
    code = "admin_disabled"


SESSION_COOKIE = "spendgate_session"  # the dashboard's login (api/ui.py): the token itself
UI_HEADER = "x-spendgate-ui"  # what the dashboard's own changes carry (cross-site forms cannot)


def credential(request: web.Request) -> str | None:
    """The admin credential a request carries: the token of ``Authorization: Bearer``, else
    the dashboard's session cookie. A change made with the cookie must also carry
    `UI_HEADER`: a form on another site can make a browser send the cookie (SameSite
    aside), never the header."""
    given = request.headers.get("authorization")
    if given is not None:
        scheme, _, token = given.partition(" ")
        token = token.strip()
        return token if scheme.lower() == "bearer" and token else None
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    if request.method not in ("GET", "HEAD") and request.headers.get(UI_HEADER) != "1":
        return None
    return cookie


def _same(given: str, expected: str) -> bool:
    # Compared as bytes: compare_digest refuses str with non-ASCII characters (TypeError).
    return hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    )


async def authenticate(request: web.Request, gateway: Gateway) -> Principal:
    """The principal behind the request's credential: 401 for none, an unknown one, or a
    revoked or expired token; 403 ``admin_disabled`` while no admin token is set in the
    environment and the request carries no stored token."""
    refuse_if_blocked(request, gateway)
    given = credential(request)
    try:
        return await principal_for(given, gateway)
    except (AuthenticationFailed, AdminDisabled):
        if given is not None:  # a wrong credential, not a missing one
            attempts_for(gateway).failed(address_of(request))
        raise


async def principal_for(given: str | None, gateway: Gateway) -> Principal:
    """The principal of a token (`authenticate`; the dashboard's sign-in form)."""
    expected = gateway.admin_token
    if given is not None and expected and _same(given, expected):
        return ENV_PRINCIPAL
    if given is not None and given.startswith(TOKEN_PREFIX):
        principal = await gateway.token_service.authenticate(given)
        if principal is not None:
            return principal
    if not expected:
        raise AdminDisabled(
            "The admin API is disabled: set the environment variable "
            f"{gateway.config.server.admin_token_env} to an admin token and restart."
        )
    raise AuthenticationFailed(
        "This endpoint needs the admin token (or an admin token from `spendgate tokens "
        "create`) as 'Authorization: Bearer'."
    )


def authorize(principal: Principal, access: Access) -> None:
    if not principal.allows(access):
        raise AccessDenied(principal.refusal(access))


def guard(gateway_key: web.AppKey[Gateway], inner: Inner, access: Access | None = None) -> Handler:
    """``inner`` behind `authenticate` and ``access``. None: `Access.READ` for GET (org-wide
    readers only) and `Access.ORG` otherwise, so that a route added without thinking of
    teams stays closed to a team's principals."""

    async def handler(request: web.Request) -> web.StreamResponse:
        gateway = request.app[gateway_key]
        principal = await authenticate(request, gateway)
        needed = access or (Access.READ if request.method in ("GET", "HEAD") else Access.ORG)
        authorize(principal, needed)
        request[PRINCIPAL] = principal
        await gateway.settled()  # what it reports includes every request already answered
        return await inner(request, gateway)

    return handler


def principal_of(request: web.Request) -> Principal:
    """The principal `guard` authenticated for this request."""
    return request[PRINCIPAL]


def scoped_storage(request: web.Request, gateway: Gateway) -> Storage:
    """The storage a report reads for this request's principal: all of it, or the rows
    and keys of the principal's team only (`spendgate.storage.team_view`)."""
    principal = principal_of(request)
    if principal.org_wide:
        return gateway.storage
    return team_storage(gateway.storage, principal.team or "")
