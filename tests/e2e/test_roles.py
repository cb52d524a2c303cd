"""Roles on the admin API: each role against every admin route (allowed, forbidden, or
filtered to its team), a team admin kept out of another team's keys, budgets, usage,
loops and audit entries, expired and revoked tokens refused (injected clock).

One in-process gateway (tests/harness.py) on SQLite with a `ManualClock`, the
environment's admin token, real traffic through the openai SDK (an ml key, a web key, a
web key whose own budget refuses, a key of no team), and admin tokens created through
``POST /admin/tokens``: a team admin of ml, one of web, an org-wide viewer, a viewer of ml
and an org admin token.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.process import HttpResult, http_request, write_config
from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.domain.loops import LoopPolicy

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
ADMIN = "sg-env-admin-roles-test"
BUDGETS: list[dict[str, Any]] = [
    {"name": "team-ml", "scope": "team", "match": "ml", "limit_usd": "100"},
    {"name": "per-team", "scope": "team", "limit_usd": "100"},
    {"name": "per-user", "scope": "user", "limit_usd": "100"},
]
POLICY = LoopPolicy(
    cooldown=timedelta(minutes=10), cooldown_max=timedelta(hours=1), forget_after=timedelta(hours=1)
)
ROLES = ("env", "org_token", "ml_admin", "web_admin", "viewer", "ml_viewer")
TEAM_OF = {"ml_admin": "ml", "web_admin": "web", "ml_viewer": "ml"}


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [{**spec, "period": "daily"} for spec in BUDGETS]


@dataclass
class World:
    harness: GatewayHarness
    clock: ManualClock
    tokens: dict[str, str] = field(default_factory=dict)  # role -> secret
    key_team: dict[str, str | None] = field(default_factory=dict)  # key id -> team

    def call(
        self, role: str, method: str, path: str, body: Any = None, *, token: str | None = None
    ) -> HttpResult:
        secret = token if token is not None else (ADMIN if role == "env" else self.tokens[role])
        return http_request(method, self.harness.url + path, body=body, token=secret)

    def ok(self, method: str, path: str, body: Any = None) -> Any:
        result = self.call("env", method, path, body)
        assert result.status < 300, (result.status, result.body)
        return result.json()

    def key(self, team: str | None, **extra: Any) -> tuple[str, str]:
        """A new key of ``team`` (created by the environment's admin): (id, secret)."""
        spec = {"name": f"k-{secrets.token_hex(3)}", "team": team, **extra}
        created = self.ok("POST", "/admin/keys", spec)
        self.key_team[created["id"]] = team
        return created["id"], created["key"]

    def loop(self, team: str | None) -> str:
        """A detected loop of a new key of ``team``: its id."""
        key_id, _ = self.key(team)
        block = self.harness.call(
            self.harness.gateway.storage.strike_loop(
                POLICY,
                key_id=key_id,
                fingerprint=secrets.token_hex(8),
                model="gpt-4o-mini",
                now=self.clock.now(),
            )
        )
        return block.id

    def token(self, role: str, team: str | None = None, **extra: Any) -> tuple[str, str]:
        body = {"name": f"{role}-{secrets.token_hex(3)}", "role": role, "team": team, **extra}
        created = self.ok("POST", "/admin/tokens", body)
        return created["id"], created["token"]


def chat(world: World, secret: str, *, refused: bool = False) -> None:
    with openai.OpenAI(
        base_url=world.harness.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:

        def ask() -> None:
            client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello roles."}]
            )

        if not refused:
            ask()
            return
        with pytest.raises(openai.RateLimitError):  # the capped key: refused by its own budget
            ask()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    folder = tmp_path_factory.mktemp("roles")
    clock = ManualClock(T0)
    harness = GatewayHarness(
        folder / "spendgate.db",
        configure=configure,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=clock,
    ).start()
    try:
        source = write_config(folder, harness.sim.url, db_path=harness.db_path, configure=configure)
        harness.gateway.config_source = str(source)  # so that POST /admin/reload reads a file
        harness.gateway.base_dir = folder
        w = World(harness, clock)
        for role, team in (
            ("team_admin", "ml"),
            ("team_admin", "web"),
            ("viewer", None),
            ("viewer", "ml"),
            ("org_admin", None),
        ):
            name = {("team_admin", "ml"): "ml_admin", ("team_admin", "web"): "web_admin"}.get(
                (role, team), {"viewer": "ml_viewer" if team else "viewer"}.get(role, "org_token")
            )
            w.tokens[name] = w.token(role, team)[1]
        for team, user in (("ml", "ada"), ("web", "bob"), (None, "cy")):
            chat(w, w.key(team, user=user)[1])
        chat(
            w, w.key("web", budget_usd="0.0000001")[1], refused=True
        )  # refused: a block of team web
        w.loop("ml")
        w.loop("web")
        yield w
    finally:
        harness.stop()


# ---------------------------------------------------------------------------- the table

ALL = {"env", "org_token", "viewer"}  # org-wide
Teams = Callable[[World, Any], set[str | None]]


def _key_teams(w: World, body: Any) -> set[str | None]:
    return {k["team"] for k in body["data"]}


def _usage_teams(w: World, body: Any) -> set[str | None]:
    return {g["group"] for g in body["top"]}


def _budget_teams(w: World, body: Any) -> set[str | None]:
    found: set[str | None] = set()
    for view in body["data"]:
        if view["scope"] == "team":
            found.add(view["member"])
        elif view["scope"] == "key":
            found.add(w.key_team.get(view["member"]))
        else:
            found.add(None)
    return found


def _loop_teams(w: World, body: Any) -> set[str | None]:
    return {w.key_team.get(block["key_id"]) for block in body["data"]}


def _series_teams(w: World, body: Any) -> set[str | None]:
    return {point["group"] for point in body["series"]}


def _audit_teams(w: World, body: Any) -> set[str | None]:
    return {entry["team"] for entry in body["data"]}


def _block_names(w: World, body: Any) -> set[str | None]:
    teams: set[str | None] = set()
    for group in body["data"]:
        key_id = group["name"].removeprefix("key:").split(":")[0]
        teams.add(w.key_team.get(key_id))
    return teams


def _savings_teams(w: World, body: Any) -> set[str | None]:
    return {g["group"] for g in body["data"]}


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # {key}, {loop}, {token}: made fresh for each call
    allowed: frozenset[str]
    body: Any = None
    teams: Teams | None = None  # a read filtered to the caller's team
    every_team: bool = True  # an org-wide caller sees ml, web and no team
    ok: int = 200

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


def roles(*names: str) -> frozenset[str]:
    return frozenset(names)


READERS = roles(*ROLES)
ADMINS = roles("env", "org_token", "ml_admin")  # may change team ml's things
ORG = roles("env", "org_token")
ROUTES = [
    Route("POST", "/admin/keys", ADMINS, {"name": "n", "team": "ml"}, ok=201),
    Route("GET", "/admin/keys", READERS, teams=_key_teams),
    Route("GET", "/admin/keys/{key}", READERS - {"web_admin"}),
    Route("PATCH", "/admin/keys/{key}", ADMINS, {"tags": ["x"]}),
    Route("POST", "/admin/keys/{key}/revoke", ADMINS),
    Route("POST", "/admin/keys/{key}/rotate", ADMINS),
    Route("GET", "/admin/usage?group_by=team&period=all", READERS, teams=_usage_teams),
    Route("GET", "/admin/usage?bucket=day&group_by=team&period=all", READERS, teams=_series_teams),
    Route("GET", "/admin/blocks?period=all", READERS, teams=_block_names, every_team=False),
    Route("GET", "/admin/savings?period=all", READERS, teams=_savings_teams, every_team=False),
    Route("GET", "/admin/budgets", READERS, teams=_budget_teams),
    Route("PUT", "/admin/budgets/team-ml/limit", ADMINS, {"limit": "50.00"}),
    Route("DELETE", "/admin/budgets/team-ml/limit", ADMINS),
    Route("POST", "/admin/budgets/team-ml/reset", ADMINS, {}),
    Route("POST", "/admin/budgets/per-team/reset", ADMINS, {"member": "ml"}),
    Route("PUT", "/admin/budgets/per-team/limit", ORG, {"limit": "99.00"}),  # every team's
    Route("PUT", "/admin/budgets/per-user/limit", ORG, {"limit": "99.00"}),
    Route("GET", "/admin/loops?all=true", READERS, teams=_loop_teams, every_team=False),
    Route("POST", "/admin/loops/{loop}/release", ADMINS),
    Route("POST", "/admin/reload", ORG),
    Route("GET", "/metrics", roles("env", "org_token", "viewer")),
    Route("POST", "/admin/tokens", ORG, {"name": "n", "role": "viewer"}, ok=201),
    Route("GET", "/admin/tokens", ORG),
    Route("POST", "/admin/tokens/{token}/revoke", ORG),
    Route("GET", "/admin/audit", READERS, teams=_audit_teams),
    Route("GET", "/admin/alerts", roles("env", "org_token", "viewer")),  # spans every team
]


def _fill(world: World, path: str) -> str:
    if "{key}" in path:
        path = path.replace("{key}", world.key("ml")[0])
    if "{loop}" in path:
        path = path.replace("{loop}", world.loop("ml"))
    if "{token}" in path:
        path = path.replace("{token}", world.token("viewer")[0])
    return path


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.id)
def test_each_role_against_every_admin_route(world: World, route: Route, role: str) -> None:
    result = world.call(role, route.method, _fill(world, route.path), route.body)
    if role not in route.allowed:
        assert result.status == 403, (result.status, result.body)
        error = result.json()["error"]
        assert error["code"] == "permission_denied"
        assert "Permission denied" in error["message"]
        return
    assert result.status == route.ok, (result.status, result.body)
    if route.teams is None:
        return
    seen = route.teams(world, result.json())
    team = TEAM_OF.get(role)
    if team is not None:
        assert seen <= {team}, f"{role} sees {seen}"
        if route.every_team:
            assert seen == {team}
    elif route.every_team:
        assert {"ml", "web", None} <= seen, f"{role} sees only {seen}"


def _canonical(route: Route) -> str:
    path = route.path.split("?")[0]
    for short, name in (("{key}", "{key_id}"), ("{loop}", "{loop_id}"), ("{token}", "{token_id}")):
        path = path.replace(short, name)
    for budget in ("team-ml", "per-team", "per-user"):
        path = path.replace(f"/{budget}/", "/{name}/")
    return f"{route.method} {path}"


def test_the_table_names_every_admin_route(world: World) -> None:
    from spendgate.api.app import create_app

    app = create_app(world.harness.gateway, manage_lifecycle=False)
    served = set()
    for route in app.router.routes():
        path = route.resource.canonical if route.resource else ""
        if route.method != "HEAD" and (path.startswith("/admin") or path == "/metrics"):
            served.add(f"{route.method} {path}")
    assert served == {_canonical(route) for route in ROUTES}


# ---------------------------------------------------------------------------- one team


def test_a_team_admin_cannot_see_or_change_another_teams_data(world: World) -> None:
    web_key, _ = world.key("web")
    for method, path, body in (
        ("GET", f"/admin/keys/{web_key}", None),
        ("PATCH", f"/admin/keys/{web_key}", {"name": "taken"}),
        ("POST", f"/admin/keys/{web_key}/revoke", None),
        ("POST", f"/admin/keys/{web_key}/rotate", None),
        ("POST", "/admin/keys", {"name": "mine now", "team": "web"}),
        ("PATCH", f"/admin/keys/{world.key('ml')[0]}", {"team": "web"}),  # moving one out
        ("POST", "/admin/budgets/per-team/reset", {"member": "web"}),
        ("PUT", f"/admin/budgets/key:{web_key}/limit", {"limit": "1.00"}),
        ("POST", f"/admin/loops/{world.loop('web')}/release", None),
    ):
        result = world.call("ml_admin", method, path, body)
        assert result.status == 403, (method, path, result.body)
        assert "belongs to team web" in result.json()["error"]["message"] or method == "GET"
    assert world.ok("GET", f"/admin/keys/{web_key}")["state"] == "active"  # nothing changed
    mine = world.call("ml_admin", "POST", "/admin/keys", {"name": "no team given"})
    assert mine.status == 201
    assert mine.json()["team"] == "ml"
    usage = world.call("ml_admin", "GET", "/admin/usage?group_by=key&period=all").json()
    assert {g["group"] for g in usage["top"]} <= {k for k, t in world.key_team.items() if t == "ml"}
    everyone = world.ok("GET", "/admin/usage?group_by=team&period=all")
    ml_only = world.call("ml_admin", "GET", "/admin/usage?group_by=team&period=all").json()
    [ml] = [g for g in everyone["top"] if g["group"] == "ml"]
    assert ml_only["top"] == [{**ml, "share_bp": 10_000}]
    assert ml_only["total_cost_nanos"] == ml["cost_nanos"] > 0
    audit = world.call("ml_admin", "GET", "/admin/audit?action=key.create").json()["data"]
    assert audit
    assert {e["team"] for e in audit} == {"ml"}
    csv = world.call("ml_admin", "GET", "/admin/audit?format=csv")
    assert csv.status == 200
    assert b",web," not in csv.body
    assert b",web," in world.call("env", "GET", "/admin/audit?format=csv").body


def test_a_team_admin_cannot_label_a_key_with_another_teams_user_service_or_tags(
    world: World,
) -> None:
    """Per-user, per-service and per-tag budgets and reports span teams: a key of ml that
    carried web's user (or a key of no team's) would spend that user's budget and be
    reported as its spend. A team admin may set only labels no other team's key carries."""
    tag, service, gone = (f"{what}-{secrets.token_hex(3)}" for what in ("tag", "svc", "gone"))
    world.key("web", tags=[tag], service=service)
    revoked, _ = world.key("web", tags=[gone])
    world.ok("POST", f"/admin/keys/{revoked}/revoke")  # its spend is still in the reports
    own, _ = world.key("ml")
    before = world.ok("GET", f"/admin/keys/{own}")
    refused: list[tuple[str, dict[str, Any]]] = [
        ("user 'bob'", {"user": "bob"}),  # web's
        ("user 'cy'", {"user": " cy "}),  # of a key of no team, as stored (stripped)
        (f"service {service!r}", {"service": service}),
        (f"tags {tag!r}", {"tags": ["mine", tag]}),
        (f"tags {gone!r}", {"tags": [gone]}),
    ]
    for label, body in refused:
        for method, path in (("POST", "/admin/keys"), ("PATCH", f"/admin/keys/{own}")):
            result = world.call("ml_admin", method, path, {"name": "n", **body})
            assert result.status == 403, (method, body, result.body)
            error = result.json()["error"]
            assert error["code"] == "permission_denied"
            assert f"{label} is carried by a key outside team ml" in error["message"]
    assert world.ok("GET", f"/admin/keys/{own}") == before  # nothing changed
    # its own team's labels, and new ones, are fine; so is keeping what an org admin set
    allowed: list[dict[str, Any]] = [{"user": "ada"}, {"user": "new-ml", "tags": ["ml-only"]}]
    for body in allowed:
        assert world.call("ml_admin", "POST", "/admin/keys", {"name": "n", **body}).status == 201
    lent, _ = world.key("ml", user="bob", tags=[tag])  # an org admin may set any
    kept: list[dict[str, Any]] = [{"name": "renamed"}, {"tags": [tag, "ml-only"]}, {"user": None}]
    for body in kept:
        assert world.call("ml_admin", "PATCH", f"/admin/keys/{lent}", body).status == 200
    assert world.call("ml_admin", "PATCH", f"/admin/keys/{lent}", {"user": "bob"}).status == 403
    assert world.call("ml_admin", "POST", f"/admin/keys/{lent}/rotate").status == 200
    assert world.call("org_token", "PATCH", f"/admin/keys/{own}", {"user": "bob"}).status == 200


# ---------------------------------------------------------------------------- tokens


def test_expired_and_revoked_tokens_are_refused(world: World) -> None:
    token_id, secret = world.token("viewer", expires_in="1h")
    assert world.call("", "GET", "/admin/keys", token=secret).status == 200
    world.clock.advance(3599)
    assert world.call("", "GET", "/admin/keys", token=secret).status == 200
    world.clock.advance(1)
    expired = world.call("", "GET", "/admin/keys", token=secret)
    assert expired.status == 401
    assert "has expired" in expired.json()["error"]["message"]
    other_id, other = world.token("team_admin", "ml")
    assert world.call("", "GET", "/admin/keys", token=other).status == 200
    world.ok("POST", f"/admin/tokens/{other_id}/revoke")
    revoked = world.call("", "GET", "/admin/keys", token=other)
    assert revoked.status == 401
    assert "has been revoked" in revoked.json()["error"]["message"]
    listed = {t["id"]: t for t in world.ok("GET", "/admin/tokens")["data"]}
    assert listed[token_id]["state"] == "expired"
    assert listed[other_id]["state"] == "revoked"
    assert all("token" not in t and "token_hash" not in t for t in listed.values())
    unknown = world.call("", "GET", "/admin/keys", token="sg-adm-" + "x" * 40)
    assert unknown.status == 401


def test_a_token_request_is_checked(world: World) -> None:
    for body, param in (
        ({"name": "a", "role": "team_admin"}, "team"),  # a team admin needs a team
        ({"name": "a", "role": "org_admin", "team": "ml"}, "team"),
        ({"name": "a", "role": "viewer", "team": "nope"}, "team"),
        ({"name": "a", "role": "root"}, "role"),
        ({"name": "a", "role": "viewer", "expires_in": "soon"}, "expires_in"),
        ({"name": "", "role": "viewer"}, "name"),
    ):
        result = world.call("env", "POST", "/admin/tokens", body)
        assert result.status == 400, body
        assert result.json()["error"]["param"] == param, (body, result.body)


def test_without_an_environment_token_stored_tokens_still_work(tmp_path: Path) -> None:
    harness = GatewayHarness(tmp_path / "spendgate.db", clock=ManualClock(T0)).start()
    try:
        assert http_request("GET", harness.url + "/admin/keys").status == 403  # admin_disabled
        from spendgate.domain.roles import Principal, Role
        from spendgate.services.tokens import TokenSpec

        gateway = harness.gateway
        issued = harness.call(
            gateway.actions(Principal("cli:ops", Role.ORG_ADMIN)).create_token(
                TokenSpec("ops", Role.ORG_ADMIN)
            )
        )
        result = http_request("GET", harness.url + "/admin/keys", token=issued.secret)
        assert result.status == 200
        refused = http_request("GET", harness.url + "/admin/keys", token="wrong")
        assert refused.json()["error"]["code"] == "admin_disabled"
    finally:
        harness.stop()
