"""The web dashboard at ``/ui``: static pages shipped in the package, behind a login.

GET  /ui, /ui/           the dashboard (its script reads the admin API), or the login page
GET  /ui/login           the login form: an admin token
POST /ui/login           check the token as the admin API does; on success set the session
                         cookie and go to /ui/
POST /ui/logout          forget the cookie
GET  /ui/whoami          who the session is: {"name", "role", "team"} (401 without one)
GET  /ui/static/{name}   the dashboard's script, styles and the charting library

The session cookie holds the token itself (``HttpOnly``, ``SameSite=Strict``, ``Secure``
over HTTPS): every admin route accepts it (`spendgate.api.auth.credential`), so the
dashboard sees and changes exactly what its token may through the API, a revoked or
expired token ends the session at once, and several workers need no shared session state.
Nothing is fetched from elsewhere at run time (Content-Security-Policy ``'self'`` only).
"""

from __future__ import annotations

from importlib import resources
from typing import Final
from urllib.parse import quote

from aiohttp import web

from spendgate.api.auth import SESSION_COOKIE, AdminDisabled, authenticate, principal_for
from spendgate.api.throttle import address_of, attempts_for, refuse_if_blocked
from spendgate.errors import AuthenticationFailed, GatewayError, StorageError
from spendgate.gateway import Gateway
from spendgate.pipeline.intake import read_body

SESSION_SECONDS: Final = 8 * 3600
_TYPES: Final = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".md": "text/plain",
    ".svg": "image/svg+xml",
}
_SECURITY: Final = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def _asset(name: str) -> bytes | None:
    """A file shipped under spendgate/ui (one folder level: vendor/), or None."""
    parts = name.split("/")
    if not 1 <= len(parts) <= 2 or any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    node = resources.files("spendgate").joinpath("ui", *parts)
    try:
        return node.read_bytes() if node.is_file() else None
    except OSError:  # a name the file system refuses (too long): no such file either
        return None


def _page(name: str, status: int = 200) -> web.Response:
    body = _asset(name)
    assert body is not None, f"spendgate/ui/{name} is missing from the package"
    return web.Response(body=body, status=status, content_type="text/html", headers=_SECURITY)


async def _signed_in(request: web.Request, gateway: Gateway) -> bool:
    try:
        await authenticate(request, gateway)
    except GatewayError:
        return False
    return True


def add_routes(app: web.Application, gateway_key: web.AppKey[Gateway]) -> None:
    async def index(request: web.Request) -> web.StreamResponse:
        if request.path == "/ui":
            raise web.HTTPFound("/ui/")
        if not await _signed_in(request, request.app[gateway_key]):
            raise web.HTTPSeeOther("/ui/login")
        return _page("index.html")

    async def login_form(request: web.Request) -> web.StreamResponse:
        return _page("login.html")

    async def login(request: web.Request) -> web.StreamResponse:
        gateway = request.app[gateway_key]
        await read_body(request, gateway.config.server)  # (anyone may send it: bounded in time)
        try:
            form = await request.post()
        except ValueError:  # not UTF-8, a multipart body without its boundary: no token
            raise web.HTTPSeeOther("/ui/login?failed=invalid_request") from None
        token = form.get("token")
        refuse_if_blocked(request, gateway)
        try:
            await principal_for(token.strip() if isinstance(token, str) else None, gateway)
        except GatewayError as error:
            if isinstance(error, AuthenticationFailed | AdminDisabled):
                attempts_for(gateway).failed(address_of(request))
            code = error.code or "denied"
            if isinstance(error, AdminDisabled) and await _tokens_stored(gateway):
                code = "invalid_api_key"  # stored tokens sign in: this one is wrong
            raise web.HTTPSeeOther("/ui/login?failed=" + quote(code)) from None
        assert isinstance(token, str)
        answer = web.HTTPSeeOther("/ui/")
        answer.set_cookie(
            SESSION_COOKIE,
            token.strip(),
            max_age=SESSION_SECONDS,
            path="/",
            httponly=True,
            samesite="Strict",
            secure=_over_https(request),
        )
        raise answer

    async def logout(request: web.Request) -> web.StreamResponse:
        answer = web.HTTPSeeOther("/ui/login")
        answer.del_cookie(SESSION_COOKIE, path="/")
        raise answer

    async def whoami(request: web.Request) -> web.StreamResponse:
        principal = await authenticate(request, request.app[gateway_key])
        body = {"name": principal.name, "role": principal.role.value, "team": principal.team}
        return web.json_response(body, headers=_SECURITY)

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        body = _asset(name)
        suffix = name[name.rfind(".") :] if "." in name else ""
        if body is None or suffix not in _TYPES or suffix == ".html":
            raise web.HTTPNotFound()
        headers = {**_SECURITY, "cache-control": "public, max-age=3600"}
        return web.Response(body=body, content_type=_TYPES[suffix], headers=headers)

    app.router.add_get("/ui", index)
    app.router.add_get("/ui/", index)
    app.router.add_get("/ui/login", login_form)
    app.router.add_post("/ui/login", login)
    app.router.add_post("/ui/logout", logout)
    app.router.add_get("/ui/whoami", whoami)
    app.router.add_get("/ui/static/{name:.+}", static)


async def _tokens_stored(gateway: Gateway) -> bool:
    """Whether a stored admin token could sign in (then the admin API is not disabled,
    though no environment token is set)."""
    try:
        tokens = await gateway.storage.admin.tokens.list_tokens()
    except StorageError:  # a backend that keeps none, or storage failing: say disabled
        return False
    now = gateway.clock.now()
    return any(token.state(now) == "active" for token in tokens)


def _over_https(request: web.Request) -> bool:
    # Behind a TLS-terminating proxy the gateway sees plain HTTP; the header only ever makes
    # the cookie stricter, so trusting it is safe.
    return request.secure or request.headers.get("x-forwarded-proto", "").lower() == "https"
