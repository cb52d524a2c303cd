"""Savings that hold when budgets bind: one fixed workload, sent with the real OpenAI SDK
through a gateway whose rewrite rule moves gpt-4o to gpt-4o-mini, under a per-user daily
budget, once enforced and once as a shadow rule. Every figure is computed here by hand.

Prices make each request's cost exact and its worst case equal to it: input is free and
every answer is exactly its ``max_tokens`` (100) long, so gpt-4o costs $0.001 a request
($10/M output) and gpt-4o-mini $0.0002 ($2/M); the budget is $0.001 a user a day.

* hank (team heavy) sends 8 requests. Routed, 5 fit the budget ($0.001 spent) and 3 are
  refused; unrouted (shadow run), 1 fits and 7 are refused. Either way hank spends his
  $0.001: routing bought him 4 more requests, not a smaller bill.
* lea (team light) sends 2: routed both fit ($0.0004); unrouted the second is refused.
  She saves $0.0006 of spend.
* leo (team light) sends 1: $0.0002 routed, $0.001 unrouted, never refused: saves $0.0008.

So the price figure says heavy saved $0.004 and light $0.0024, but the spend figure, the
one an operator budgets by, is $0 for heavy and $0.0014 for light, and the shadow run
predicts exactly that.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.cli.main import cli
from spendgate.clock import ManualClock
from spendgate.domain.reports import dollars

ADMIN = "savings-budgets-admin"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
OUTPUT = 100
ASKED = 1_000_000  # nanos: 100 output tokens of gpt-4o at $10/M
ROUTED = 200_000  # ... of gpt-4o-mini at $2/M
LIMIT = 1_000_000  # $0.001 a user a day
WORKLOAD = {"hank": ("heavy", 8), "lea": ("light", 2), "leo": ("light", 1)}


def configure(shadow: bool) -> Any:
    def apply(data: dict[str, Any]) -> None:
        data["orgs"]["acme"]["teams"] += ["heavy", "light"]
        data["models"]["gpt-4o"]["price"] = {"input": "0", "output": "10"}
        data["models"]["gpt-4o-mini"]["price"] = {"input": "0", "output": "2"}
        data["budgets"] = [
            {
                "name": "per-user",
                "scope": "user",
                "match": "*",
                "limit_usd": "0.001",
                "period": "daily",
            }
        ]
        rule = {
            "name": "to-mini",
            "kind": "rewrite",
            "scope": "user",
            "match": "*",
            "models": ["gpt-4o"],
            "to": "gpt-4o-mini",
        }
        data["routing"] = {"rules": [rule | ({"shadow": True} if shadow else {})]}

    return apply


def send_workload(gw: GatewayHarness) -> dict[str, int]:
    """The same requests in both runs; how many of each user's were served."""
    served: dict[str, int] = {}
    statuses: list[int] = []
    for user, (team, count) in WORKLOAD.items():
        secret = gw.create_key(name=user, user=user, team=team)
        served[user] = 0
        with gw.sdk_client("openai", secret, max_retries=0, timeout=10) as client:
            for i in range(count):
                try:
                    client.chat.completions.create(
                        model="gpt-4o",
                        messages=[{"role": "user", "content": f"{user} asks question {i}"}],
                        max_tokens=OUTPUT,
                        extra_headers={"x-sim-output-tokens": str(OUTPUT)},
                    )
                except openai.APIStatusError as refused:
                    statuses.append(refused.status_code)
                else:
                    served[user] += 1
    assert set(statuses) <= {429}, statuses  # every refusal: the budget's
    return served


def run(shadow: bool, folder: Path) -> tuple[GatewayHarness, Path, dict[str, int]]:
    gw = GatewayHarness(
        folder / "spendgate.db",
        configure=configure(shadow),
        clock=ManualClock(NOW),
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    served = send_workload(gw)
    config = write_config(folder, gw.sim.url, db_path=gw.db_path, configure=configure(shadow))
    return gw, config, served


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    found: dict[str, Any] = {}
    harnesses = []
    try:
        for mode in ("enforced", "shadow"):
            gw, config, served = run(mode == "shadow", tmp_path_factory.mktemp(mode))
            harnesses.append(gw)
            answer = http_request(
                "GET", gw.url + "/admin/savings?group_by=team&period=today", token=ADMIN
            )
            assert answer.status == 200, answer.body
            found[mode] = {
                "served": served,
                "report": answer.json(),
                "by_team": {g["group"]: g for g in answer.json()["data"]},
                "config": config,
                "gw": gw,
            }
        yield found
    finally:
        for gw in harnesses:
            gw.stop()


def test_the_workload_bound_as_designed(reports: dict[str, Any]) -> None:
    assert reports["enforced"]["served"] == {"hank": 5, "lea": 2, "leo": 1}
    assert reports["shadow"]["served"] == {"hank": 1, "lea": 1, "leo": 1}


def test_enforced_routing_reports_price_unrouted_and_spend_by_hand(
    reports: dict[str, Any],
) -> None:
    by_team = reports["enforced"]["by_team"]
    heavy, light = by_team["heavy"], by_team["light"]
    # hank: 5 served at ROUTED; unrouted they cost 5 * ASKED; his budget refused him,
    # so unrouted he could have spent what he spent: LIMIT (5 * ROUTED), no more.
    assert (heavy["requests"], heavy["cost_nanos"]) == (5, 5 * ROUTED)
    assert heavy["counterfactual_nanos"] == 5 * ASKED  # (b) what they cost unrouted
    assert heavy["price_saved_nanos"] == 5 * ASKED - 5 * ROUTED == 4_000_000  # (a)
    assert heavy["capped_counterfactual_nanos"] == LIMIT == 5 * ROUTED
    assert heavy["spend_saved_nanos"] == 0  # (c) he spent his $0.001 in both worlds
    assert (heavy["bound_members"], heavy["capped_members"]) == (1, 0)
    assert heavy["bound_budgets"] == ["per-user"]
    assert heavy["budget_bound"] is True
    # lea: 2 served; unrouted her second would not have fit: capped at LIMIT.
    # leo: 1 served; unrouted it costs exactly LIMIT: fits, not capped.
    assert (light["requests"], light["cost_nanos"]) == (3, 3 * ROUTED)
    assert light["counterfactual_nanos"] == 3 * ASKED
    assert light["price_saved_nanos"] == 3 * ASKED - 3 * ROUTED == 2_400_000
    assert light["capped_counterfactual_nanos"] == LIMIT + ASKED
    assert light["spend_saved_nanos"] == (LIMIT - 2 * ROUTED) + (ASKED - ROUTED) == 1_400_000
    assert (light["bound_members"], light["capped_members"]) == (0, 1)
    assert light["bound_budgets"] == ["per-user"]
    total = reports["enforced"]["report"]["total"]
    assert total["spend_saved_nanos"] == 1_400_000
    assert total["price_saved_nanos"] == total["saved_nanos"] == 6_400_000
    assert total["spend_saved_usd"] == dollars(1_400_000)


def test_the_shadow_run_predicts_the_same_figures(reports: dict[str, Any]) -> None:
    by_team = reports["shadow"]["by_team"]
    heavy, light = by_team["heavy"], by_team["light"]
    # hank: 1 served at ASKED (it would have cost ROUTED), 7 refused. Each refused request
    # would really have cost ASKED (no input price; his median answer is 100 tokens), so
    # ROUTED routed: 1 * ROUTED + 7 * ROUTED > what he spent: routed he spends it all.
    assert (heavy["requests"], heavy["cost_nanos"], heavy["shadow_cost_nanos"]) == (
        1,
        ASKED,
        ROUTED,
    )
    assert heavy["shadow_price_saved_nanos"] == ASKED - ROUTED
    assert heavy["shadow_spend_saved_nanos"] == ASKED - min(ASKED, ROUTED + 7 * ROUTED) == 0
    assert (heavy["bound_members"], heavy["capped_members"]) == (1, 0)
    # lea: 1 served, 1 refused: routed both fit in 2 * ROUTED. leo: never refused.
    assert (light["requests"], light["cost_nanos"], light["shadow_cost_nanos"]) == (
        2,
        2 * ASKED,
        2 * ROUTED,
    )
    lea = ASKED - min(ASKED, ROUTED + ROUTED)
    leo = ASKED - ROUTED
    assert light["shadow_spend_saved_nanos"] == lea + leo == 1_400_000
    assert light["bound_members"] == 1
    # Nothing was routed in the shadow run: its own price and spend figures are zero.
    assert (light["price_saved_nanos"], light["spend_saved_nanos"]) == (0, 0)


def test_shadow_and_enforced_agree_one_to_one(reports: dict[str, Any]) -> None:
    enforced, shadow = reports["enforced"]["by_team"], reports["shadow"]["by_team"]
    for team in ("heavy", "light"):
        assert enforced[team]["spend_saved_nanos"] == shadow[team]["shadow_spend_saved_nanos"]
    assert (
        reports["enforced"]["report"]["total"]["spend_saved_nanos"]
        == reports["shadow"]["report"]["total"]["shadow_spend_saved_nanos"]
        == 1_400_000
    )
    # The price figures never agree where a budget binds: they count the requests served,
    # and routing changed how many were.
    assert enforced["heavy"]["price_saved_nanos"] != shadow["heavy"]["shadow_price_saved_nanos"]


def test_the_table_says_when_a_budget_bound(reports: dict[str, Any]) -> None:
    env = {
        "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
        "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
        "SPENDGATE_CONFIG": None,
        "SPENDGATE_ADMIN_TOKEN": None,
    }
    config = reports["enforced"]["config"]
    result = CliRunner().invoke(
        cli, ["savings", "-c", str(config), "--period", "all"], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[1].startswith(f"Spend saved within budgets: ${dollars(1_400_000)} ")
    notes = [line for line in lines if " bound: " in line]
    assert notes[0].startswith("heavy: budget per-user bound: 1 member-window(s) refused")
    assert f"of ${dollars(4_000_000)} cheaper prices, ${dollars(0)} is spend saved" in notes[0]
    assert notes[1].startswith("light: budget per-user bound: 0 member-window(s) refused")
    assert "1 would have reached the limit unrouted" in notes[1]
    assert len(notes) == 2
    json_out = CliRunner().invoke(
        cli, ["savings", "-c", str(config), "--period", "all", "--json"], env=env
    )
    assert '"spend_saved_nanos": 1400000' in json_out.stdout
