"""What ``GET /admin/budgets`` and ``spendgate budgets`` say of a budget whose counter began
after the period did (added by a reload mid-month, or reset), and of no budget at all, on a
real gateway with the real OpenAI SDK as the client and an injected clock."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
from click.testing import CliRunner

from e2e.process import http_request, write_config
from harness import GatewayHarness, base_config
from spendgate.cli.main import cli
from spendgate.clock import ManualClock
from spendgate.config import parse_config

ADMIN = "sg-admin-budget-window"
MODEL = "gpt-4o-mini"
BUDGET = {"name": "team-ml", "scope": "team", "match": "ml", "limit_usd": "5", "period": "monthly"}


def send(gw: GatewayHarness, secret: str, count: int) -> None:
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        for _ in range(count):
            client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "Hi."}], max_tokens=20
            )


def team_ml(gw: GatewayHarness) -> dict[str, Any]:
    answer = http_request("GET", gw.url + "/admin/budgets?name=team-ml", token=ADMIN)
    assert answer.status == 200, answer.body
    (view,) = answer.json()["data"]
    return dict(view)


def test_the_burn_rate_comes_from_the_window_the_budget_spent_in(tmp_path: Path) -> None:
    """A budget added by a reload mid-period showed ``spent`` 0 and a burn rate (and a
    forecast) from the ledger's rows of the last hour, charged before it counted anything;
    so did a budget just reset. The burn now never counts more than the budget's counter
    holds: 0 for both, and the requests it counts afterwards burn as before."""
    clock = ManualClock(datetime(2026, 3, 10, 12, tzinfo=UTC))
    gw = GatewayHarness(
        tmp_path / "spendgate.db", clock=clock, env={"SPENDGATE_ADMIN_TOKEN": ADMIN}
    ).start()
    try:
        secret = gw.create_key(team="ml")
        send(gw, secret, 10)  # no budget counts these
        clock.advance(60)
        data = base_config(gw.sim.url, gw.db_path)
        data["budgets"] = [BUDGET]
        gw.call(gw.gateway.reload(parse_config(data, "reloaded.yaml")))

        added = team_ml(gw)
        assert added["spent"] == 0
        assert added["forecast"]["recent"] == 0
        assert added["forecast"]["burn_per_hour"] == 0
        assert added["forecast"]["projected"] == 0

        send(gw, secret, 2)  # counted: the burn is theirs
        clock.advance(60)
        counted = team_ml(gw)
        assert counted["spent"] > 0
        assert counted["forecast"]["recent"] == counted["spent"]

        reset = http_request("POST", gw.url + "/admin/budgets/team-ml/reset", token=ADMIN)
        assert reset.status == 200, reset.body
        forgiven = team_ml(gw)
        assert forgiven["spent"] == 0
        assert forgiven["forecast"]["burn_per_hour"] == 0
    finally:
        gw.stop()


def test_budgets_with_none_configured_says_so(tmp_path: Path) -> None:
    """``spendgate budgets`` said "no budget has a counter yet" with no budget configured
    at all, as if one would appear once used."""
    runner = CliRunner()
    none = write_config(tmp_path, "http://127.0.0.1:9", name="none.yaml")
    shown = runner.invoke(cli, ["budgets", "-c", str(none)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("no budget is configured: none under budgets: or limits:")

    def anyone(data: dict[str, Any]) -> None:
        data["budgets"] = [{**BUDGET, "name": "per-user", "scope": "user", "match": "*"}]

    unused = write_config(tmp_path, "http://127.0.0.1:9", configure=anyone, name="unused.yaml")
    shown = runner.invoke(cli, ["budgets", "-c", str(unused)])
    assert shown.exit_code == 0, shown.output
    assert shown.output.startswith("no budget has a counter yet")
