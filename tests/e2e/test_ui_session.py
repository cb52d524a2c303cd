"""The dashboard's session over plain HTTP: the login sets a cookie that the admin API
accepts as it accepts the bearer token, changes made with the cookie need the dashboard's
header, and the pages carry a strict Content-Security-Policy and fetch nothing elsewhere."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from e2e.key_world import T0
from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.domain.roles import Principal, Role
from spendgate.services.tokens import TokenSpec

ADMIN = "ui-session-admin-token"


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("ui-session") / "spendgate.db",
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=ManualClock(T0),
    ).start()
    yield harness
    harness.stop()


async def _session(
    world: GatewayHarness, token: str
) -> tuple[aiohttp.ClientSession, int, str, str]:
    jar = aiohttp.CookieJar(unsafe=True)  # cookies for 127.0.0.1
    session = aiohttp.ClientSession(cookie_jar=jar)
    async with session.post(
        world.url + "/ui/login", data={"token": token}, allow_redirects=False
    ) as answer:
        location = answer.headers.get("location", "")
        return session, answer.status, location, answer.headers.get("set-cookie", "")


async def test_the_login_cookie_opens_the_admin_api_and_changes_need_the_header(
    world: GatewayHarness,
) -> None:
    session, status, location, set_cookie = await _session(world, ADMIN)
    async with session:
        assert (status, location) == (303, "/ui/")
        assert set_cookie.startswith(f"spendgate_session={ADMIN};")
        assert {"HttpOnly", "SameSite=Strict", "Path=/"} <= {
            part.strip() for part in set_cookie.split(";")
        }
        async with session.get(world.url + "/admin/keys") as answer:
            assert answer.status == 200
        body = {"name": "from-cookie"}
        async with session.post(world.url + "/admin/keys", json=body) as answer:
            assert answer.status == 401  # a cross-site form could send this: refused
        headers = {"x-spendgate-ui": "1"}
        async with session.post(world.url + "/admin/keys", json=body, headers=headers) as a:
            assert a.status == 201
        async with session.post(world.url + "/ui/logout", allow_redirects=False) as answer:
            assert answer.status == 303
        async with session.get(world.url + "/admin/keys") as answer:
            assert answer.status == 401


async def test_a_wrong_token_sets_no_cookie(world: GatewayHarness) -> None:
    session, status, location, set_cookie = await _session(world, "wrong")
    async with session:
        assert (status, location) == (303, "/ui/login?failed=invalid_api_key")
        assert set_cookie == ""
        assert "spendgate_session" not in session.cookie_jar.filter_cookies(URL(world.url))
        async with session.get(world.url + "/ui/", allow_redirects=False) as answer:
            assert (answer.status, answer.headers["location"]) == (303, "/ui/login")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"token=\xff\xfe"),  # not UTF-8
        ("multipart/form-data; boundary=zz", b"no boundary here"),
    ],
)
async def test_a_sign_in_form_that_does_not_parse_is_a_failed_sign_in(
    world: GatewayHarness, content_type: str, body: bytes
) -> None:
    """Anyone may post the form: a body it cannot read was a 500 and a traceback."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            world.url + "/ui/login",
            data=body,
            headers={"content-type": content_type},
            allow_redirects=False,
        ) as answer,
    ):
        assert answer.status == 303
        assert answer.headers["location"] == "/ui/login?failed=invalid_request"
        assert "set-cookie" not in answer.headers


async def test_pages_forbid_other_origins_and_static_files_stay_inside_the_package(
    world: GatewayHarness,
) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(world.url + "/ui/login") as answer:
            policy = answer.headers["content-security-policy"]
            assert "default-src 'self'" in policy
            assert "frame-ancestors 'none'" in policy
        async with session.get(world.url + "/ui/static/vendor/chart.umd.min.js") as answer:
            assert answer.status == 200
            assert (await answer.read()).startswith(b"/*!\n * Chart.js v4")
        for path in ("/ui/static/../gateway.py", "/ui/static/%2e%2e/gateway.py", "/ui/static/x.py"):
            async with session.get(world.url + path) as answer:
                assert answer.status == 404, path
        # A name no file system accepts (longer than NAME_MAX) is not found either: it was a
        # 500 and a traceback in the error log, for anyone who could reach the port.
        for path in ("/ui/static/" + "a" * 300 + ".js", "/ui/static/vendor/" + "b" * 300 + ".css"):
            async with session.get(world.url + path) as answer:
                assert answer.status == 404, path


def test_the_dashboard_names_no_other_origin() -> None:
    folder = resources.files("spendgate").joinpath("ui")
    for name in ("index.html", "login.html", "app.js", "login.js", "app.css"):
        text = folder.joinpath(name).read_text("utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", text), name
        assert "cdn" not in text.lower(), name


async def test_a_wrong_token_without_an_environment_token_is_not_called_disabled(
    tmp_path: Path,
) -> None:
    """With no environment token but stored tokens (``spendgate tokens create``), a mistyped
    token sent the dashboard to "The admin API is disabled on this gateway: set its admin
    token and restart it", though the stored tokens sign in. It now says the token was not
    accepted; with no stored token either, the admin API is disabled, and says so."""
    harness = GatewayHarness(tmp_path / "spendgate.db", clock=ManualClock(T0)).start()
    try:
        session, _, location, _ = await _session(harness, "wrong")
        await session.close()
        assert location == "/ui/login?failed=admin_disabled"
        issued = harness.call(
            harness.gateway.actions(Principal("cli:ops", Role.ORG_ADMIN)).create_token(
                TokenSpec("ops", Role.ORG_ADMIN)
            )
        )
        session, _, location, _ = await _session(harness, "wrong")
        await session.close()
        assert location == "/ui/login?failed=invalid_api_key"
        session, _, location, _ = await _session(harness, issued.secret)
        await session.close()
        assert location == "/ui/"
    finally:
        harness.stop()
