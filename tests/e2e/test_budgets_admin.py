"""Budgets seen and steered at run time: the admin API and ``spendgate budgets``.

``GET /admin/budgets`` shows spent, reserved, remaining and the next reset, and a finished
request's spend is there at once (its row and its counters commit before its last byte).
``PUT .../limit`` raises a limit while the gateway runs (optionally until ``expires_at``),
``DELETE .../limit`` restores the configured one, ``POST .../reset`` forgives the window.
The CLI, pointed at the same database, shows the same numbers and changes the same limits.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from e2e.process import HttpResult, http_request, write_config
from harness import GatewayHarness
from spendgate.cli.main import cli
from spendgate.clock import ManualClock

ADMIN = "sg-admin-budgets-test"
PROMPT = [{"role": "user", "content": "A small request for the admin tests."}]
SIM = {"x-sim-output-tokens": "75"}

BUDGETS: list[dict[str, Any]] = [
    # one request (~46k nano-dollars) fits, a second (~66k worst case) does not
    {"name": "team-ml", "scope": "team", "match": "ml", "limit_usd": "0.0001"},
    {"name": "per-user", "scope": "user", "limit_usd": "1.00"},
    {"name": "team-tokens", "scope": "team", "match": "ml", "limit_tokens": 100_000},
]


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [{**spec, "period": "daily"} for spec in BUDGETS]
    data["budget_settings"] = {"min_output_tokens": 100}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path / "spendgate.db", configure=configure, env={"SPENDGATE_ADMIN_TOKEN": ADMIN}
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def admin(gw: GatewayHarness, method: str, path: str, body: Any = None) -> HttpResult:
    return http_request(method, gw.url + path, body=body, token=ADMIN)


def budgets(gw: GatewayHarness) -> dict[tuple[str, str], dict[str, Any]]:
    result = admin(gw, "GET", "/admin/budgets")
    assert result.status == 200, result.body
    return {(v["name"], v["member"]): v for v in result.json()["data"]}


def admitted(client: openai.OpenAI) -> bool:
    try:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=PROMPT, max_tokens=100, extra_headers=SIM
        )
    except openai.RateLimitError as exc:
        refusal = exc
    else:
        return True
    assert refusal.code == "insufficient_quota"
    return False


def test_admin_api_shows_spend_at_once_and_steers_limits(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="admin-ml", team="ml", user="alice")
    key_id = gw.last_key_id
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        assert admitted(client)
        finished = time.monotonic()
        shown = budgets(gw)
        visible_after = time.monotonic() - finished
        (row,) = gw.ledger(key_id)
        team = shown[("team-ml", "ml")]
        assert team["spent"] == row.cost_nanos  # the very first look shows it
        assert visible_after < 1.0
        assert team["reserved"] == 0
        assert team["limit"] == team["configured_limit"] == 100_000
        assert team["remaining"] == 100_000 - row.cost_nanos
        assert team["unit"] == "usd"
        assert team["display"]["limit"] == "$0.000100"
        assert team["override"] is None
        since = datetime.fromisoformat(team["window_since"])  # today's UTC midnight
        assert since.utcoffset() == timedelta(0)
        assert (since.hour, since.minute, since.second) == (0, 0, 0)
        assert timedelta(0) <= datetime.now(UTC) - since < timedelta(days=1, seconds=5)
        assert team["resets_at"] == (since + timedelta(days=1)).isoformat()
        assert shown[("per-user", "alice")]["spent"] == row.cost_nanos
        tokens = shown[("team-tokens", "ml")]
        assert tokens["unit"] == "tokens"
        assert tokens["spent"] == row.input_tokens + row.output_tokens
        assert set(shown) == {("team-ml", "ml"), ("per-user", "alice"), ("team-tokens", "ml")}

        assert not admitted(client)

        # raise the limit while the gateway runs: the refused request now goes through
        raised = admin(gw, "PUT", "/admin/budgets/team-ml/limit", {"limit": "0.001"})
        assert raised.status == 200, raised.body
        assert raised.json() == {"name": "team-ml", "limit": 1_000_000, "expires_at": None}
        team = budgets(gw)[("team-ml", "ml")]
        assert (team["limit"], team["configured_limit"]) == (1_000_000, 100_000)
        assert team["override"] == {"limit": 1_000_000, "expires_at": None}
        assert admitted(client)

        # back to the configured limit: refused again
        cleared = admin(gw, "DELETE", "/admin/budgets/team-ml/limit")
        assert cleared.json() == {"name": "team-ml", "overrides_cleared": 1}
        team = budgets(gw)[("team-ml", "ml")]
        assert team["limit"] == 100_000
        assert team["override"] is None
        # past 80%, not "exhausted" (spent leaves room) but it refused a request just now
        assert (team["state"], team["refused_last_minute"]) == ("refusing", 1)
        assert not admitted(client)

        # forgive the window: spend 0 (the ledger keeps its rows), admitted again
        forgiven = admin(gw, "POST", "/admin/budgets/team-ml/reset", {})
        assert forgiven.status == 200
        assert forgiven.json()["counters_reset"] >= 1
        team = budgets(gw)[("team-ml", "ml")]
        assert (team["spent"], team["reserved"], team["state"]) == (0, 0, "ok")
        assert len(gw.ledger(key_id)) == 2
        assert budgets(gw)[("per-user", "alice")]["spent"] == sum(
            r.cost_nanos for r in gw.ledger(key_id)
        )  # only the named budget was reset
        assert admitted(client)

    # refusals of the admin API itself
    assert http_request("GET", gw.url + "/admin/budgets").status == 401
    assert admin(gw, "PUT", "/admin/budgets/nope/limit", {"limit": "1"}).status == 404
    assert admin(gw, "PUT", "/admin/budgets/team-ml/limit", {"limit": "lots"}).status == 400
    naive = {"limit": "1", "expires_at": "2030-01-01T00:00:00"}
    assert admin(gw, "PUT", "/admin/budgets/team-ml/limit", naive).status == 400


def test_temporary_override_falls_back_when_it_expires(tmp_path: Path) -> None:
    start = datetime(2025, 6, 2, 9, 0, tzinfo=UTC)
    clock = ManualClock(start)
    gw = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=configure,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=clock,
    ).start()
    try:
        secret = gw.create_key(name="temp", team="ml")
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
            assert admitted(client)
            assert not admitted(client)
            until = start + timedelta(hours=2)
            body = {"limit": "0.001", "expires_at": until.isoformat()}
            raised = admin(gw, "PUT", "/admin/budgets/team-ml/limit", body)
            assert raised.json()["expires_at"] == until.isoformat()
            team = budgets(gw)[("team-ml", "ml")]
            assert team["override"] == {"limit": 1_000_000, "expires_at": until.isoformat()}
            assert admitted(client)
            clock.set(until - timedelta(milliseconds=1))
            assert admitted(client)
            clock.set(until)  # expired: the configured $0.0001 applies again
            team = budgets(gw)[("team-ml", "ml")]
            assert team["limit"] == 100_000
            assert team["override"] is None
            assert not admitted(client)
    finally:
        gw.stop()


def test_cli_shows_and_changes_the_same_budgets(gw: GatewayHarness, tmp_path: Path) -> None:
    config = write_config(tmp_path, gw.sim.url, db_path=gw.db_path, configure=configure)
    runner = CliRunner()
    secret = gw.create_key(name="cli-ml", team="ml", user="bob")
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        assert admitted(client)
        (row,) = gw.ledger(gw.last_key_id)

        table = runner.invoke(cli, ["budgets", "-c", str(config)])
        assert table.exit_code == 0, table.output
        lines = table.output.splitlines()
        assert lines[0].split()[:6] == ["BUDGET", "MEMBER", "PERIOD", "SPENT", "RESERVED", "LIMIT"]
        ml = next(line for line in lines if line.startswith("team-ml "))
        assert "$0.000100" in ml  # the limit
        assert f"${row.cost_nanos / 1e9:.6f}" in ml  # the spend
        assert "$0.000000" in ml  # nothing reserved
        assert any(line.startswith("per-user ") and " bob " in line for line in lines)

        shown = runner.invoke(cli, ["budgets", "-c", str(config), "--json"])
        assert shown.exit_code == 0, shown.output
        views = {(v["name"], v["member"]): v for v in json.loads(shown.output)}
        # the admin API's own shape and numbers; a forecast projects from the moment it
        # is read (the time left to the reset), so each side's is compared on its own
        api = budgets(gw)
        assert {k: v.pop("forecast")["recent"] for k, v in views.items() if v["forecast"]} == {
            k: v.pop("forecast")["recent"] for k, v in api.items() if v["forecast"]
        }
        for view in (*views.values(), *api.values()):
            view.pop("forecast", None)
        assert views == api
        assert views[("team-ml", "ml")]["spent"] == row.cost_nanos

        assert not admitted(client)
        changed = runner.invoke(cli, ["budgets", "set-limit", "-c", str(config), "team-ml", "0.01"])
        assert changed.exit_code == 0, changed.output
        assert admitted(client)  # the running gateway reads the override in its transaction
        cleared = runner.invoke(cli, ["budgets", "clear-limit", "-c", str(config), "team-ml"])
        assert cleared.exit_code == 0, cleared.output
        assert "1 override(s) cleared" in cleared.output
        assert not admitted(client)
        # an override that has already expired would never apply: refused, nothing stored
        past = [
            "budgets",
            "set-limit",
            "-c",
            str(config),
            "team-ml",
            "0.01",
            "--until",
            "2020-01-01",
        ]
        refused = runner.invoke(cli, past)
        assert refused.exit_code != 0
        assert "expires_at 2020-01-01T00:00:00+00:00 is not in the future" in refused.output
        assert not admitted(client)
        reset = runner.invoke(cli, ["budgets", "reset", "-c", str(config), "team-ml"])
        assert reset.exit_code == 0, reset.output
        assert admitted(client)

        only = runner.invoke(cli, ["budgets", "-c", str(config), "--name", "team-tokens", "--json"])
        assert [v["name"] for v in json.loads(only.output)] == ["team-tokens"]
        unknown = runner.invoke(cli, ["budgets", "-c", str(config), "--name", "nope"])
        assert unknown.exit_code != 0
        assert "no budget named 'nope'" in unknown.output
