"""``spendgate savings`` and ``GET /admin/savings`` on a fixed workload: requests sent with
the real SDKs through a gateway with routing rules (aliases, rewrites, a downgrade, a shadow
rewrite, a fallback from an unreachable deployment). Every number in the reports is checked
exactly against costs computed here from the configured prices and the usage each response
reported."""

from __future__ import annotations

import csv
import io
import json
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.cli.main import cli
from spendgate.domain.reports import dollars, format_bp, share_bp
from spendgate.domain.savings import CSV_HEADER
from spendgate.money import dollars_to_nanos, token_cost

TOKEN = "savings-admin-token"
ENV = {
    "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
    "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
    "SPENDGATE_CONFIG": None,
    "SPENDGATE_ADMIN_TOKEN": None,
}
# Dollars per million input and output tokens, set in the config so the test knows them.
PRICES = {
    "gpt-4o": ("2.5", "10"),
    "gpt-4o-mini": ("0.15", "0.6"),
    "claude-sonnet-4-6": ("3", "15"),
    "claude-haiku-4-5": ("1", "5"),
    "flaky-4o": ("5", "20"),  # served by nobody: its one deployment's port is closed
}
PROMPT = "How much did routing save us this month?"


def cost(model: str, input_tokens: int, output_tokens: int) -> int:
    price_in, price_out = (dollars_to_nanos(p) for p in PRICES[model])
    return token_cost(input_tokens, price_in) + token_cost(output_tokens, price_out)


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def routing_config(dead_url: str) -> Callable[[dict[str, Any]], None]:
    def configure(data: dict[str, Any]) -> None:
        data["providers"]["dead"] = {
            "kind": "openai",
            "base_url": dead_url + "/v1",
            "api_key_env": "SIM_OPENAI_KEY",
        }
        data["models"]["flaky-4o"] = {
            "deployments": [{"provider": "dead", "model": "gpt-4o"}],
            "fallbacks": ["gpt-4o-mini"],
        }
        for model, (price_in, price_out) in PRICES.items():
            data["models"][model]["price"] = {"input": price_in, "output": price_out}
        data["budgets"] = [
            {
                "name": "reporter-4o",
                "scope": "service",
                "match": "reporter",
                "models": ["gpt-4o"],
                "limit_tokens": 1000,
            }
        ]
        web = {"scope": "team", "match": "web"}
        data["routing"] = {
            "tiers": {"gpt-4o": "gpt-4o-mini"},
            "rules": [
                {"name": "web-default", "kind": "alias", "alias": "default", "to": "gpt-4o-mini"}
                | web,
                {"name": "web-no-4o", "kind": "rewrite", "models": ["gpt-4o"], "to": "gpt-4o-mini"}
                | web,
                {
                    "name": "web-no-sonnet",
                    "kind": "rewrite",
                    "models": ["claude-sonnet-*"],
                    "to": "claude-haiku-4-5",
                }
                | web,
                {
                    "name": "ml-try-mini",
                    "kind": "rewrite",
                    "scope": "team",
                    "match": "ml",
                    "models": ["gpt-4o"],
                    "to": "gpt-4o-mini",
                    "shadow": True,
                },
                {
                    "name": "reporter-soft",
                    "kind": "downgrade",
                    "scope": "service",
                    "match": "reporter",
                    "budget": "reporter-4o",
                    "at": "0.5",
                },
            ],
        }

    return configure


@dataclass(frozen=True)
class Served:
    """One request of the workload, as the test expects it to have been served."""

    team: str
    service: str
    asked: str  # the model it asked for (after its alias): the counterfactual's prices
    served: str
    input_tokens: int
    output_tokens: int
    kind: str | None = None
    fell_back: bool = False
    shadow: tuple[str, str] | None = None  # (rule, model)

    @property
    def cost(self) -> int:
        return cost(self.served, self.input_tokens, self.output_tokens)

    @property
    def counterfactual(self) -> int:
        return cost(self.asked, self.input_tokens, self.output_tokens)

    @property
    def shadow_cost(self) -> int:
        """On the shadow rule's model, if one would have routed it; else its cost."""
        if self.shadow is None:
            return self.cost
        return cost(self.shadow[1], self.input_tokens, self.output_tokens)


@dataclass
class Setup:
    harness: GatewayHarness
    config: Path
    workload: list[Served]


def _openai(
    harness: GatewayHarness, secret: str, model: str, output: int, max_tokens: int | None = None
) -> tuple[dict[str, str], int, int]:
    client = harness.sdk_client("openai", secret, max_retries=0, timeout=10)
    with client:
        extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
        raw = client.chat.completions.with_raw_response.create(
            model=model,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-sim-output-tokens": str(output)},
            **extra,
        )
        usage = raw.parse().usage
    assert usage.completion_tokens == output
    return dict(raw.headers), usage.prompt_tokens, usage.completion_tokens


def _anthropic(
    harness: GatewayHarness, secret: str, model: str, output: int
) -> tuple[dict[str, str], int, int]:
    with harness.sdk_client("anthropic", secret, max_retries=0, timeout=10) as client:
        raw = client.messages.with_raw_response.create(
            model=model,
            max_tokens=200,
            messages=[{"role": "user", "content": PROMPT}],
            extra_headers={"x-sim-output-tokens": str(output)},
        )
        usage = raw.parse().usage
    assert usage.output_tokens == output
    return dict(raw.headers), usage.input_tokens, usage.output_tokens


def run_workload(harness: GatewayHarness) -> list[Served]:
    """Ten requests from four keys; each response's headers confirm how it was routed."""
    keys = {
        (team, service): harness.create_key(name=f"{team}-{service}", team=team, service=service)
        for team, service in [
            ("web", "chat"),
            ("ml", "trainer"),
            ("platform", "batch"),
            ("platform", "reporter"),
        ]
    }
    served: list[Served] = []

    def send(
        team: str, service: str, sdk: str, model: str, output: int, expect: dict[str, Any]
    ) -> None:
        secret = keys[(team, service)]
        if sdk == "anthropic":
            headers, tokens_in, tokens_out = _anthropic(harness, secret, model, output)
        else:
            headers, tokens_in, tokens_out = _openai(
                harness, secret, model, output, expect.pop("max_tokens", None)
            )
        assert headers["x-spendgate-model"] == expect["served"], (model, headers)
        assert headers.get("x-spendgate-route-kind") == expect.get("kind"), (model, headers)
        fell_back = "x-spendgate-fallback-from" in headers
        assert fell_back == expect.get("fell_back", False), (model, headers)
        served.append(
            Served(team, service, input_tokens=tokens_in, output_tokens=tokens_out, **expect)
        )

    mini = "gpt-4o-mini"
    for output in (100, 300):
        rewrite = {"asked": "gpt-4o", "served": mini, "kind": "rewrite"}
        send("web", "chat", "openai", "gpt-4o", output, rewrite)
    send("web", "chat", "openai", "default", 50, {"asked": mini, "served": mini, "kind": "alias"})
    send(
        "web",
        "chat",
        "anthropic",
        "claude-sonnet-4-6",
        80,
        {"asked": "claude-sonnet-4-6", "served": "claude-haiku-4-5", "kind": "rewrite"},
    )
    send("web", "chat", "openai", mini, 20, {"asked": mini, "served": mini})
    shadow = ("ml-try-mini", mini)
    for output in (120, 40):
        send(
            "ml",
            "trainer",
            "openai",
            "gpt-4o",
            output,
            {"asked": "gpt-4o", "served": "gpt-4o", "shadow": shadow},
        )
    send(
        "platform",
        "batch",
        "openai",
        "flaky-4o",
        60,
        {"asked": "flaky-4o", "served": mini, "fell_back": True},
    )
    # 600 of the reporter's 1,000 gpt-4o tokens: past the downgrade's 50 %.
    send(
        "platform",
        "reporter",
        "openai",
        "gpt-4o",
        600,
        {"asked": "gpt-4o", "served": "gpt-4o", "max_tokens": 700},
    )
    send(
        "platform",
        "reporter",
        "openai",
        "gpt-4o",
        30,
        {"asked": "gpt-4o", "served": mini, "kind": "downgrade"},
    )
    return served


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("savings")
    configure = routing_config(f"http://127.0.0.1:{_closed_port()}")
    harness = GatewayHarness(
        folder / "spendgate.db", configure=configure, env={"SPENDGATE_ADMIN_TOKEN": TOKEN}
    ).start()
    try:
        config = write_config(folder, harness.sim.url, db_path=harness.db_path, configure=configure)
        yield Setup(harness, config, run_workload(harness))
    finally:
        harness.stop()


# ----------------------------------------------------------------------------- expected


def expected_group(name: str | None, requests: list[Served]) -> dict[str, Any]:
    actual = sum(r.cost for r in requests)
    counterfactual = sum(r.counterfactual for r in requests)
    saved = counterfactual - actual
    on_shadow = sum(r.shadow_cost for r in requests)
    return {
        "group": name,
        "requests": len(requests),
        "cost_nanos": actual,
        "cost_usd": dollars(actual),
        "counterfactual_nanos": counterfactual,
        "counterfactual_usd": dollars(counterfactual),
        "saved_nanos": saved,
        "saved_usd": dollars(saved),
        "saved_bp": share_bp(saved, counterfactual),
        "aliased": sum(r.kind == "alias" for r in requests),
        "rewritten": sum(r.kind == "rewrite" for r in requests),
        "downgraded": sum(r.kind == "downgrade" for r in requests),
        "fell_back": sum(r.fell_back for r in requests),
        # no dollar budget caps spend here: the spend figures are the price figures
        "price_saved_nanos": saved,
        "price_saved_usd": dollars(saved),
        "capped_counterfactual_nanos": counterfactual,
        "capped_counterfactual_usd": dollars(counterfactual),
        "spend_saved_nanos": saved,
        "spend_saved_usd": dollars(saved),
        "spend_saved_bp": share_bp(saved, counterfactual),
        "shadow_cost_nanos": on_shadow,
        "shadow_cost_usd": dollars(on_shadow),
        "shadow_price_saved_nanos": actual - on_shadow,
        "shadow_price_saved_usd": dollars(actual - on_shadow),
        "shadow_spend_saved_nanos": actual - on_shadow,
        "shadow_spend_saved_usd": dollars(actual - on_shadow),
        "budget_bound": False,
        "bound_members": 0,
        "capped_members": 0,
        "bound_budgets": [],
    }


def expected_report(workload: list[Served], by: str) -> dict[str, Any]:
    groups: dict[str, list[Served]] = {}
    for served in workload:
        groups.setdefault(getattr(served, by), []).append(served)
    data = sorted(
        (expected_group(name, rows) for name, rows in groups.items()),
        key=lambda g: (-g["saved_nanos"], g["group"]),
    )
    total = expected_group(None, workload)
    del total["group"]
    shadowed = [r for r in workload if r.shadow is not None]
    assert {r.shadow for r in shadowed} == {("ml-try-mini", "gpt-4o-mini")}
    actual = sum(r.cost for r in shadowed)
    on_shadow = sum(cost("gpt-4o-mini", r.input_tokens, r.output_tokens) for r in shadowed)
    shadow = {
        "rule": "ml-try-mini",
        "requests": len(shadowed),
        "cost_nanos": actual,
        "cost_usd": dollars(actual),
        "shadow_cost_nanos": on_shadow,
        "shadow_cost_usd": dollars(on_shadow),
        "would_save_nanos": actual - on_shadow,
        "would_save_usd": dollars(actual - on_shadow),
        "would_save_bp": share_bp(actual - on_shadow, actual),
    }
    return {"group_by": by, "period": "all", "total": total, "data": data, "shadow": [shadow]}


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env=ENV, catch_exceptions=False)


def cli_json(setup: Setup, by: str) -> Any:
    result = run("savings", "-c", str(setup.config), "--by", by, "--period", "all", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def admin(setup: Setup, query: str, token: str | None = TOKEN) -> Any:
    return http_request("GET", f"{setup.harness.url}/admin/savings?{query}", token=token)


def _without_bounds(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("since", "until")}


# ----------------------------------------------------------------------------- tests


def test_the_workload_left_one_ledger_row_per_answered_attempt(setup: Setup) -> None:
    rows = setup.harness.ledger()
    assert len(rows) == len(setup.workload) == 10
    # The unreachable deployment wrote no row; the fallback's row is attempt 1.
    (fallback,) = [r for r in rows if r.attempt]
    assert (fallback.attempt, fallback.fallback_from, fallback.routed_model) == (
        1,
        "flaky-4o",
        "gpt-4o-mini",
    )
    assert fallback.request_id.endswith("-1")
    assert sum(r.cost_nanos for r in rows) == sum(s.cost for s in setup.workload)


@pytest.mark.parametrize("by", ["team", "service"])
def test_cli_json_matches_the_prices_exactly(setup: Setup, by: str) -> None:
    report = cli_json(setup, by)
    expected = expected_report(setup.workload, by)
    assert _without_bounds(report) == expected
    assert report["since"] == "1970-01-01T00:00:00+00:00"


def test_the_headline_numbers(setup: Setup) -> None:
    """The same figures, spelled out per team, so a wrong sum cannot hide in a helper."""
    by_team = {g["group"]: g for g in cli_json(setup, "team")["data"]}
    work = setup.workload
    web = [s for s in work if s.team == "web"]
    web_actual = (
        cost("gpt-4o-mini", web[0].input_tokens, 100)
        + cost("gpt-4o-mini", web[1].input_tokens, 300)
        + cost("gpt-4o-mini", web[2].input_tokens, 50)
        + cost("claude-haiku-4-5", web[3].input_tokens, 80)
        + cost("gpt-4o-mini", web[4].input_tokens, 20)
    )
    web_asked = (
        cost("gpt-4o", web[0].input_tokens, 100)
        + cost("gpt-4o", web[1].input_tokens, 300)
        + cost("gpt-4o-mini", web[2].input_tokens, 50)
        + cost("claude-sonnet-4-6", web[3].input_tokens, 80)
        + cost("gpt-4o-mini", web[4].input_tokens, 20)
    )
    assert (by_team["web"]["cost_nanos"], by_team["web"]["counterfactual_nanos"]) == (
        web_actual,
        web_asked,
    )
    assert (by_team["web"]["aliased"], by_team["web"]["rewritten"]) == (1, 3)
    # ml asked for gpt-4o and got it: nothing saved; the shadow rule would have.
    assert by_team["ml"]["saved_nanos"] == 0
    assert by_team["ml"]["saved_bp"] == 0
    platform = by_team["platform"]
    batch, big, small = (s for s in work if s.team == "platform")
    assert platform["saved_nanos"] == (
        cost("flaky-4o", batch.input_tokens, 60)
        - cost("gpt-4o-mini", batch.input_tokens, 60)
        + cost("gpt-4o", small.input_tokens, 30)
        - cost("gpt-4o-mini", small.input_tokens, 30)
    )
    assert big.served == "gpt-4o"
    assert (platform["downgraded"], platform["fell_back"]) == (1, 1)
    assert platform["saved_nanos"] > 0
    assert by_team["web"]["saved_nanos"] > 0


def test_admin_api_gives_the_same_report(setup: Setup) -> None:
    for by in ("team", "service"):
        answer = admin(setup, f"group_by={by}&period=all")
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("application/json")
        assert _without_bounds(answer.json()) == expected_report(setup.workload, by)
    default = admin(setup, "").json()
    assert (default["group_by"], default["period"]) == ("team", "month")


def test_csv_from_the_cli_and_the_api(setup: Setup) -> None:
    answer = admin(setup, "group_by=service&period=all&format=csv")
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert 'filename="savings-service.csv"' in answer.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(answer.body.decode())))
    assert tuple(lines[0]) == CSV_HEADER
    expected = expected_report(setup.workload, "service")["data"]
    assert lines[1:] == [
        [
            g["group"],
            str(g["requests"]),
            g["cost_usd"],
            g["counterfactual_usd"],
            g["saved_usd"],
            str(g["saved_bp"]),
            str(g["aliased"]),
            str(g["rewritten"]),
            str(g["downgraded"]),
            str(g["fell_back"]),
            g["capped_counterfactual_usd"],
            g["spend_saved_usd"],
            g["shadow_cost_usd"],
            g["shadow_price_saved_usd"],
            g["shadow_spend_saved_usd"],
            "0",
            "0",
            "",
        ]
        for g in expected
    ]
    result = run("savings", "-c", str(setup.config), "--by", "service", "--period", "all", "--csv")
    assert result.exit_code == 0, result.output
    assert result.stdout == answer.body.decode()


def test_table(setup: Setup) -> None:
    result = run("savings", "-c", str(setup.config), "--period", "all")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    expected = expected_report(setup.workload, "team")
    total = expected["total"]
    assert lines[0].startswith("Savings by team, 1970-01-01 00:00 to ")
    assert lines[0].endswith(
        f"${total['saved_usd']} saved ({format_bp(total['saved_bp'])}) of "
        f"${total['counterfactual_usd']} over 10 request(s)"
    )
    assert lines[1] == (
        f"Spend saved within budgets: ${total['spend_saved_usd']} "
        f"({format_bp(total['spend_saved_bp'])}) of ${total['capped_counterfactual_usd']}; "
        f"shadow rules would save ${total['shadow_spend_saved_usd']} of spend "
        f"(${total['shadow_price_saved_usd']} in price)"
    )
    assert lines[2].split() == [
        "TEAM",
        "REQUESTS",
        "COST",
        "$",
        "ASKED-FOR",
        "$",
        "SAVED",
        "$",
        "SAVED",
        "SPEND-SAVED",
        "$",
        "SHADOW-SAVES",
        "$",
        "SHADOW-SPEND",
        "$",
        "ALIAS",
        "REWRITE",
        "DOWNGRADE",
        "FALLBACK",
    ]

    def cells(name: str, g: dict[str, Any]) -> list[str]:
        return [
            name,
            str(g["requests"]),
            g["cost_usd"],
            g["counterfactual_usd"],
            g["saved_usd"],
            format_bp(g["saved_bp"]),
            g["spend_saved_usd"],
            g["shadow_price_saved_usd"],
            g["shadow_spend_saved_usd"],
            *(str(g[k]) for k in ("aliased", "rewritten", "downgraded", "fell_back")),
        ]

    groups = expected["data"]
    assert [line.split() for line in lines[3 : 3 + len(groups)]] == [
        cells(g["group"], g) for g in groups
    ]
    assert lines[3 + len(groups)].split() == cells("(total)", total)
    (shadow,) = expected["shadow"]
    assert lines[4 + len(groups)].split()[:2] == ["SHADOW", "RULE"]
    assert lines[5 + len(groups)].split() == [
        "ml-try-mini",
        str(shadow["requests"]),
        shadow["cost_usd"],
        shadow["shadow_cost_usd"],
        shadow["would_save_usd"],
        format_bp(shadow["would_save_bp"]),
    ]
    assert len(lines) == 6 + len(groups)  # no budget bound: no notes


def test_a_period_without_traffic_saved_nothing(setup: Setup) -> None:
    report = admin(setup, "period=2001-02-03").json()
    assert report["data"] == []
    assert report["shadow"] == []
    assert report["total"]["requests"] == 0
    assert (report["total"]["saved_nanos"], report["total"]["saved_bp"]) == (0, 0)
    assert (report["since"], report["until"]) == (
        "2001-02-03T00:00:00+00:00",
        "2001-02-04T00:00:00+00:00",
    )


def test_bad_parameters_and_credentials(setup: Setup) -> None:
    bad = admin(setup, "group_by=user")
    assert bad.status == 400
    assert bad.json()["error"]["param"] == "group_by"
    assert "team, service" in bad.json()["error"]["message"]
    assert admin(setup, "period=fortnight").json()["error"]["param"] == "period"
    assert admin(setup, "", token=None).status == 401
    assert admin(setup, "", token="wrong").status == 401
    result = run("savings", "-c", str(setup.config), "--by", "user")
    assert result.exit_code == 2
    assert "'user' is not one of 'team', 'service'" in result.output
    result = run("savings", "-c", str(setup.config), "--period", "fortnight")
    assert result.exit_code == 1
    assert "unknown period 'fortnight'" in result.output
