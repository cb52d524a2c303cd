"""The audit log: every kind of admin change, through the admin API and through the CLI,
is written with who, what, when (the injected clock) and from what to what, never a
secret; ``GET /admin/audit`` and ``spendgate audit`` show it (filters, JSON, CSV).

One in-process gateway on SQLite (tests/e2e/key_world.py: a `ManualClock`, the
environment's admin token) and the CLI on the same database."""

from __future__ import annotations

import csv
import getpass
import io
import json
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import openai
import pytest

from e2e.key_world import Setup, run, run_json, started
from e2e.process import (
    ADMIN_TOKEN,
    GatewayProcess,
    gateway_env,
    http_request,
    running_gateway,
    write_config,
)
from spendgate.domain.audit import CSV_HEADER, AuditAction
from spendgate.domain.loops import LoopPolicy

TOKEN = "sg-env-admin-audit-test"
POLICY = LoopPolicy(
    cooldown=timedelta(minutes=10), cooldown_max=timedelta(hours=1), forget_after=timedelta(hours=1)
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    for world in started(tmp_path_factory, "audit", TOKEN):
        world.harness.gateway.config_source = str(world.config)  # POST /admin/reload reads it
        world.harness.gateway.base_dir = world.config.parent
        yield world


def admin(setup: Setup, method: str, path: str, body: Any = None) -> Any:
    return as_token(setup, TOKEN, method, path, body)


def as_token(setup: Setup, secret: str, method: str, path: str, body: Any = None) -> Any:
    result = http_request(method, setup.harness.url + path, body=body, token=secret)
    assert result.status < 300, (result.status, result.body)
    return result.json()


def loop_of(setup: Setup, key_id: str) -> str:
    gateway = setup.harness.gateway
    block = setup.harness.call(
        gateway.storage.strike_loop(
            POLICY, key_id=key_id, fingerprint="f" * 16, model="gpt-4o-mini", now=setup.clock.now()
        )
    )
    return block.id


def entries(setup: Setup, query: str = "") -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = admin(setup, "GET", f"/admin/audit{query}")["data"]
    return data


def test_every_api_change_is_audited_with_before_and_after(setup: Setup) -> None:
    lead = admin(
        setup, "POST", "/admin/tokens", {"name": "lead", "role": "team_admin", "team": "ml"}
    )
    secret = lead["token"]
    actor = f"token:{lead['id']} (lead)"
    setup.clock.advance(60)
    start = setup.clock.now()
    key = as_token(setup, secret, "POST", "/admin/keys", {"name": "svc", "budget_usd": "5.00"})
    key_id = key["id"]
    with openai.OpenAI(
        base_url=setup.harness.openai_base_url, api_key=key["key"], max_retries=0
    ) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Spend a little."}]
        )
    as_token(setup, secret, "PATCH", f"/admin/keys/{key_id}", {"name": "svc-2", "tags": ["a"]})
    rotated = as_token(setup, secret, "POST", f"/admin/keys/{key_id}/rotate")
    budget = f"key:{key_id}"
    as_token(setup, secret, "PUT", f"/admin/budgets/{budget}/limit", {"limit": "7.50"})
    as_token(setup, secret, "DELETE", f"/admin/budgets/{budget}/limit")
    as_token(setup, secret, "POST", f"/admin/budgets/{budget}/reset", {})
    loop = loop_of(setup, key_id)
    as_token(setup, secret, "POST", f"/admin/loops/{loop}/release")
    as_token(setup, secret, "POST", f"/admin/keys/{key_id}/revoke")
    admin(setup, "POST", "/admin/reload")
    viewer = admin(setup, "POST", "/admin/tokens", {"name": "v", "role": "viewer"})
    admin(setup, "POST", f"/admin/tokens/{viewer['id']}/revoke")

    found = entries(setup, f"?since={quote(start.isoformat())}")
    by_action = {entry["action"]: entry for entry in reversed(found)}  # the latest of each
    assert set(by_action) == {action.value for action in AuditAction}
    assert [e["at"] for e in found] == [start.isoformat()] * len(found)  # the injected clock
    for name in ("key.create", "key.update", "key.rotate", "key.revoke", "budget.reset"):
        entry = by_action[name]
        assert (entry["actor"], entry["role"], entry["team"]) == (actor, "team_admin", "ml")
    create = by_action["key.create"]
    assert create["before"] is None
    assert create["after"]["name"] == "svc"
    assert create["after"]["budget_usd"] == "5.00"
    update = by_action["key.update"]
    assert (update["before"]["name"], update["after"]["name"]) == ("svc", "svc-2")
    assert (update["before"]["tags"], update["after"]["tags"]) == ([], ["a"])
    rotate = by_action["key.rotate"]
    assert rotate["before"]["hint"] == key["hint"]
    assert rotate["after"]["hint"] == rotated["hint"] != key["hint"]
    revoke = by_action["key.revoke"]
    assert revoke["before"]["revoked_at"] is None
    assert revoke["after"]["revoked_at"] == start.isoformat()
    set_limit = by_action["budget.set_limit"]
    assert set_limit["target"] == budget
    assert set_limit["before"] == {"override": None}
    assert set_limit["after"] == {"override": {"limit": 7_500_000_000, "expires_at": None}}
    clear = by_action["budget.clear_limit"]
    assert clear["before"] == {"override": {"limit": 7_500_000_000, "expires_at": None}}
    assert clear["after"] == {"override": None, "overrides_cleared": 1}
    reset = by_action["budget.reset"]
    [spent] = reset["before"]["spent"].values()
    assert spent > 0
    assert reset["after"]["spent"] == {key_id: 0}
    assert reset["after"]["counters_reset"] >= 1
    release = by_action["loop.release"]
    assert (release["target"], release["before"]["key_id"], release["after"]) == (
        loop,
        key_id,
        {"released": True},
    )
    reload = by_action["config.reload"]
    assert (reload["actor"], reload["role"]) == ("env", "org_admin")
    assert reload["before"]["config_sha256"] == reload["after"]["config_sha256"]  # same file
    assert reload["after"]["reloaded"] is True
    token_create = by_action["token.create"]
    assert (token_create["target"], token_create["after"]["role"]) == (viewer["id"], "viewer")
    token_revoke = by_action["token.revoke"]
    assert token_revoke["before"]["state"] == "active"
    assert token_revoke["after"]["state"] == "revoked"
    body = http_request("GET", setup.harness.url + "/admin/audit", token=TOKEN).body
    for shown in (key["key"], rotated["key"], secret, viewer["token"]):
        assert shown.encode() not in body  # no secret in the log
    assert key["key"][-6:].encode() in body  # its hint is


def test_the_audit_route_filters(setup: Setup) -> None:
    setup.clock.advance(3600)
    since = setup.clock.now()
    made = admin(setup, "POST", "/admin/keys", {"name": "filtered", "team": "web"})
    setup.clock.advance(60)
    admin(setup, "POST", f"/admin/keys/{made['id']}/revoke")
    until = quote(str(since + timedelta(seconds=1)))  # "2026-03-02 10:01:01+00:00"
    window = f"?since={quote(since.isoformat())}&until={until}"
    assert [e["action"] for e in entries(setup, window)] == ["key.create"]
    later = entries(setup, f"?since={since.isoformat()}")  # '+' unescaped: a space
    assert [e["action"] for e in later] == ["key.revoke", "key.create"]  # newest first
    assert all(e["actor"] == "env" for e in entries(setup, "?actor=env"))
    assert {e["action"] for e in entries(setup, "?action=key.revoke")} == {"key.revoke"}
    assert len(entries(setup, "?limit=1")) == 1
    for query, param in (("?action=key.delete", "action"), ("?since=yesterday", "since")):
        result = http_request("GET", setup.harness.url + f"/admin/audit{query}", token=TOKEN)
        assert result.status == 400
        assert result.json()["error"]["param"] == param
    exported = http_request("GET", setup.harness.url + "/admin/audit?format=csv", token=TOKEN)
    assert exported.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(exported.body.decode())))
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) - 1 == len(entries(setup))


def test_a_reload_by_sighup_is_audited(setup: Setup) -> None:
    from spendgate.server import reload_on_signal

    setup.clock.advance(60)
    assert setup.harness.call(reload_on_signal(setup.harness.gateway))  # what SIGHUP runs
    [entry] = entries(setup, "?action=config.reload&actor=signal:SIGHUP")
    assert entry["at"] == setup.clock.now().isoformat()
    assert entry["role"] == "org_admin"
    assert entry["target"] == str(setup.config)
    assert entry["after"]["reloaded"] is True


def test_cli_changes_are_audited_too(setup: Setup) -> None:
    actor = f"cli:{getpass.getuser()}"
    key = run_json(setup, "keys", "create", "--name", "from-cli", "--team", "ml")
    assert run(setup, "keys", "update", key["id"], "--name", "renamed").exit_code == 0
    assert run(setup, "keys", "rotate", key["id"]).exit_code == 0
    budget = f"key:{key['id']}"
    assert run(setup, "keys", "update", key["id"], "--budget-usd", "3.00").exit_code == 0
    assert run(setup, "budgets", "set-limit", budget, "4.00").exit_code == 0
    assert run(setup, "budgets", "clear-limit", budget).exit_code == 0
    assert run(setup, "budgets", "reset", budget).exit_code == 0
    loop = loop_of(setup, key["id"])
    assert run(setup, "loops", "release", loop).exit_code == 0
    assert run(setup, "keys", "revoke", key["id"]).exit_code == 0
    token = run_json(
        setup, "tokens", "create", "--name", "ci", "--role", "viewer", "--expires", "30d"
    )
    assert token["token"].startswith("sg-adm-")
    assert run(setup, "tokens", "revoke", token["id"]).exit_code == 0
    listed = run_json(setup, "tokens", "list")
    assert {t["id"]: t["state"] for t in listed}[token["id"]] == "revoked"
    assert all("token" not in t for t in listed)

    mine = run_json(setup, "audit", "--actor", actor)
    actions = [entry["action"] for entry in reversed(mine)]
    assert actions == [
        "key.create",
        "key.update",
        "key.rotate",
        "key.update",
        "budget.set_limit",
        "budget.clear_limit",
        "budget.reset",
        "loop.release",
        "key.revoke",
        "token.create",
        "token.revoke",
    ]
    assert {(e["role"], e["team"]) for e in mine if e["action"].startswith("key.")} == {
        ("org_admin", "ml")
    }
    api = entries(setup, f"?actor={actor}")
    assert [e["id"] for e in api] == [e["id"] for e in mine]  # the API shows the CLI's entries
    table = run(setup, "audit", "--action", "key.update")
    assert table.exit_code == 0
    assert 'name: "from-cli" -> "renamed"' in table.stdout
    exported = run(setup, "audit", "--csv", "--actor", actor)
    rows = list(csv.reader(io.StringIO(exported.stdout)))
    assert tuple(rows[0]) == CSV_HEADER
    assert len(rows) == 1 + len(mine)
    assert token["token"] not in run(setup, "audit", "--json").stdout
    refused = run(setup, "audit", "--since", "not-a-time")
    assert refused.exit_code != 0
    assert "since" in refused.output
    # a time without a zone is UTC, as for every other time the CLI takes (it was refused:
    # "'since' must carry a time zone"); with one, or as the table prints it, the same
    for since in ("2000-01-01", "2000-01-01T00:00", "2000-01-01T01:00+01:00", "2000-01-01T00:00Z"):
        dated = run(setup, "audit", "--since", since, "--actor", actor, "--json")
        assert dated.exit_code == 0, (since, dated.output)
        assert [e["id"] for e in json.loads(dated.stdout)] == [e["id"] for e in mine]


def test_an_audit_entry_survives_kill_9_once_the_change_is_answered(tmp_path: Path) -> None:
    """The entry commits before the answer (the storage contract): ``kill -9`` right after
    the answers loses none, and the token made before it still works after a restart."""
    config = write_config(tmp_path, "http://127.0.0.1:9")  # no request reaches a provider
    process = GatewayProcess(config).start()
    try:
        made = http_request(
            "POST",
            process.url + "/admin/tokens",
            body={"name": "ops", "role": "org_admin"},
            token=ADMIN_TOKEN,
        )
        assert made.status == 201
        secret = made.json()["token"]
        key = http_request(
            "POST", process.url + "/admin/keys", body={"name": "k"}, token=secret
        ).json()
        assert process.kill9() == -9
    finally:
        process.stop()  # reaps it (nothing left to stop once killed)
    with sqlite3.connect(tmp_path / "spendgate.db") as conn:
        rows = conn.execute("SELECT action, target FROM audit_log ORDER BY seq").fetchall()
    assert rows == [("token.create", made.json()["id"]), ("key.create", key["id"])]
    with running_gateway(config, env=gateway_env(admin_token=None)) as again:
        shown = http_request("GET", again.url + "/admin/audit", token=secret)
        assert shown.status == 200
        assert [e["action"] for e in shown.json()["data"]] == ["key.create", "token.create"]
