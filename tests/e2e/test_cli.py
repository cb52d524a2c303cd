"""The ``spendgate`` command line: keys, usage and check-config, run with click's CliRunner
against a config file whose database a running (in-process) gateway serves at the same
time, so a key made on the command line works at once and usage shows real traffic."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
import yaml
from click.testing import CliRunner, Result

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate import __version__
from spendgate.cli.main import cli
from spendgate.domain.identity import hash_secret
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.reports import CSV_HEADER, dollars, format_bp
from terminal import safe_lines

ADMIN = "cli-test-admin-token"
ENV = {
    "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
    "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
    "SPENDGATE_CONFIG": None,
    "SPENDGATE_ADMIN_TOKEN": None,
}


@dataclass
class Setup:
    harness: GatewayHarness
    config: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("cli")
    harness = GatewayHarness(folder / "spendgate.db", env={"SPENDGATE_ADMIN_TOKEN": ADMIN})
    harness.start()
    try:
        config = write_config(folder, harness.sim.url, db_path=harness.db_path)
        yield Setup(harness, config)
    finally:
        harness.stop()


def run(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env={**ENV, **(env or {})}, catch_exceptions=False)


def run_json(*args: str) -> Any:
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def chat(setup: Setup, secret: str, model: str = "gpt-4o-mini", output_tokens: int = 20) -> Any:
    with openai.OpenAI(
        base_url=setup.harness.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        return client.chat.completions.create(
            model=model,
            messages=[{"role": "user", "content": "hello from the cli tests"}],
            extra_headers={"x-sim-output-tokens": str(output_tokens)},
        )


# ----------------------------------------------------------------------------- keys


def test_keys_create_list_show_rotate_revoke_json(setup: Setup) -> None:
    c = str(setup.config)
    created = run_json(
        "keys", "create", "-c", c, "--name", "billing", "--team", "ml", "--user", "alice",
        "--service", "billing-svc", "--tag", "prod", "--tag", "eu", "--model", "gpt-4o*",
    )  # fmt: skip
    secret, key_id = created.pop("key"), created["id"]
    assert secret.startswith("sk-sg-")
    assert created["org"] == "acme"
    assert created["tags"] == ["prod", "eu"]
    assert created["allowed_models"] == ["gpt-4o*"]
    assert "key_hash" not in created
    # The running gateway reads the same database: the new key works at once.
    assert chat(setup, secret).choices[0].message.content
    assert [r.service for r in setup.harness.ledger(key_id)] == ["billing-svc"]

    listing = run("keys", "list", "-c", c, "--json")
    assert listing.exit_code == 0
    assert secret not in listing.output
    assert hash_secret(secret) not in listing.output
    entries = json.loads(listing.stdout)
    assert all("key" not in e and "key_hash" not in e for e in entries)
    assert [e for e in entries if e["id"] == key_id] == [created]
    assert run_json("keys", "show", "-c", c, key_id) == created

    rotated = run_json("keys", "rotate", "-c", c, key_id)
    new_secret = rotated.pop("key")
    assert new_secret != secret
    assert rotated["id"] == key_id
    assert rotated["team"] == "ml"
    with pytest.raises(openai.AuthenticationError):
        chat(setup, secret)
    assert chat(setup, new_secret).choices[0].message.content

    revoked = run_json("keys", "revoke", "-c", c, key_id)
    assert revoked["revoked_at"] is not None
    assert "key" not in revoked
    with pytest.raises(openai.AuthenticationError):
        chat(setup, new_secret)
    assert key_id not in {e["id"] for e in run_json("keys", "list", "-c", c)}
    assert key_id in {e["id"] for e in run_json("keys", "list", "-c", c, "--all")}
    again = run("keys", "rotate", "-c", c, key_id)
    assert again.exit_code == 1
    assert "revoked" in again.stderr


def test_keys_human_output(setup: Setup) -> None:
    c = str(setup.config)
    created = run("keys", "create", "-c", c, "--name", "readable", "--team", "web")
    assert created.exit_code == 0, created.output
    fields = dict(
        (part.strip() for part in line.split(":", 1))
        for line in created.stdout.splitlines()
        if ":" in line
    )
    assert fields["key"].startswith("sk-sg-")
    assert fields["team"] == "web"
    assert "Store this key now" in created.stderr
    assert fields["key"] not in created.stderr

    table = run("keys", "list", "-c", c)
    assert table.exit_code == 0
    assert table.stdout.splitlines()[0].split() == [
        "ID",
        "NAME",
        "TEAM",
        "SERVICE",
        "USER",
        "STATE",
        "LIMITS",
    ]
    row = next(line for line in table.stdout.splitlines() if line.startswith(fields["id"]))
    assert row.split()[1:3] == ["readable", "web"]
    assert row.split()[-2:] == ["active", "-"]  # no budget or limit of its own
    assert fields["key"] not in table.stdout

    shown = run("keys", "show", "-c", c, fields["id"])
    assert shown.exit_code == 0
    assert "readable" in shown.stdout
    assert "sk-sg-" in shown.stdout  # the hint...
    assert fields["key"] not in shown.stdout  # ...never the secret

    assert run("keys", "revoke", "-c", c, fields["id"]).exit_code == 0
    everything = run("keys", "list", "-c", c, "--all")
    row = next(line for line in everything.stdout.splitlines() if line.startswith(fields["id"]))
    assert row.split()[-2] == "revoked"


def test_keys_errors(setup: Setup) -> None:
    c = str(setup.config)
    bad_team = run("keys", "create", "-c", c, "--name", "x", "--team", "marketing")
    assert bad_team.exit_code == 1
    assert "marketing" in bad_team.stderr
    assert "ml, platform, web" in bad_team.stderr
    assert bad_team.stdout == ""
    unknown = run("keys", "show", "-c", c, "key_nope")
    assert unknown.exit_code == 1
    assert "no key with id 'key_nope'" in unknown.stderr
    assert run("keys", "revoke", "-c", c, "key_nope").exit_code == 1
    assert run("keys", "create", "-c", c).exit_code == 2  # --name is required


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("--name", "eve\x1b[2J", ["name", "U+001B at position 3"]),
        ("--name", "osc\x1b]0;pwned", ["name", "U+001B"]),
        ("--user", "fake\n  1 row", ["user", "U+000A"]),
        ("--service", "cr\rsvc", ["service", "U+000D"]),
        ("--user", "bidi\u202eevil", ["user", "BIDI", "U+202E"]),
        ("--tag", "t\x07", ["tags", "U+0007"]),
        ("--name", "n" * 201, ["name", "at most 200"]),
        ("--expires", "2020-01-01T00:00:00", ["expires_at", "not in the future"]),
    ],
)
def test_keys_create_refuses_control_characters_and_past_expiries(
    setup: Setup, option: str, value: str, words: list[str]
) -> None:
    c = str(setup.config)
    before = run_json("keys", "list", "-c", c, "--all")
    args = ["keys", "create", "-c", c, "--name", "x", option, value]
    refused = run(*args)
    assert refused.exit_code == 1
    assert refused.stdout == ""
    assert refused.stderr.startswith("Error: ")
    for word in words:
        assert word in refused.stderr
    safe_lines(refused.stderr)  # the error says where, and never echoes the character
    assert run_json("keys", "list", "-c", c, "--all") == before


# ----------------------------------------------------------------------------- usage


@pytest.fixture(scope="module")
def traffic(setup: Setup) -> list[LedgerRow]:
    """A few requests from four teams (one of them no team), through the real gateway."""
    keys = {
        team: run_json("keys", "create", "-c", str(setup.config), "--name", f"u-{team}", *args)
        for team, args in {
            "ml": ("--team", "ml", "--user", "alice"),
            "web": ("--team", "web", "--user", "bob"),
            "platform": ("--team", "platform", "--user", "carol"),
            "none": ("--user", "dave"),
        }.items()
    }
    before = {row.request_id for row in setup.harness.ledger()}
    for tokens in (40, 50, 60):
        chat(setup, keys["ml"]["key"], model="gpt-4o", output_tokens=tokens)
    with anthropic.Anthropic(
        base_url=setup.harness.url, api_key=keys["web"]["key"], max_retries=0, timeout=10
    ) as claude:
        for tokens in (30, 45):
            claude.messages.create(
                model="claude-haiku-4-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-sim-output-tokens": str(tokens)},
            )
    chat(setup, keys["platform"]["key"], output_tokens=12)
    chat(setup, keys["none"]["key"], output_tokens=5)
    rows = setup.harness.ledger()
    assert len([r for r in rows if r.request_id not in before]) == 7
    return rows


def _totals(rows: list[LedgerRow], attribute: str) -> dict[str | None, dict[str, int]]:
    out: dict[str | None, dict[str, int]] = {}
    for row in rows:
        group = out.setdefault(
            getattr(row, attribute),
            {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_nanos": 0},
        )
        group["requests"] += 1
        group["input_tokens"] += row.input_tokens
        group["output_tokens"] += row.output_tokens
        group["cost_nanos"] += row.cost_nanos
    return out


def _ranked(totals: dict[str | None, dict[str, int]]) -> list[tuple[str | None, dict[str, int]]]:
    return sorted(totals.items(), key=lambda kv: (-kv[1]["cost_nanos"], kv[0] is None, kv[0] or ""))


@pytest.mark.parametrize(
    ("by", "attribute"), [("team", "team"), ("user", "user"), ("model", "served_model")]
)
def test_usage_json_matches_the_ledger(
    setup: Setup, traffic: list[LedgerRow], by: str, attribute: str
) -> None:
    report = run_json(
        "usage", "-c", str(setup.config), "--by", by, "--period", "today", "--top", "3"
    )
    ranked = _ranked(_totals(traffic, attribute))
    total = sum(sums["cost_nanos"] for _, sums in ranked)
    assert report["group_by"] == by
    assert report["total_cost_nanos"] == total
    assert report["total_groups"] == len(ranked)
    assert [
        (e["group"], {k: e[k] for k in sums})
        for e, (_, sums) in zip(report["top"], ranked, strict=False)
    ] == ranked[:3]
    rest = ranked[3:]
    assert report["rest"]["groups"] == len(rest)
    assert report["rest"]["cost_nanos"] == sum(sums["cost_nanos"] for _, sums in rest)
    assert report["rest"]["requests"] == sum(sums["requests"] for _, sums in rest)
    assert abs(report["top_share_bp"] + report["rest"]["share_bp"] - 10_000) <= 1

    # The same report as the admin API gives (the CLI says so in its --help).
    api = http_request(
        "GET",
        f"{setup.harness.url}/admin/usage?group_by={by}&period=today&top=3",
        token=ADMIN,
    ).json()
    for moving in ("until",):
        api.pop(moving)
        report.pop(moving)
    assert api == report


def test_usage_table(setup: Setup, traffic: list[LedgerRow]) -> None:
    result = run(
        "usage", "-c", str(setup.config), "--by", "team", "--period", "today", "--top", "3"
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    ranked = _ranked(_totals(traffic, "team"))
    total = sum(sums["cost_nanos"] for _, sums in ranked)
    assert lines[0].startswith("Spend by team, ")
    assert lines[0].endswith(f"${dollars(total)} over {len(ranked)} team(s)")
    header = ["#", "TEAM", "REQUESTS", "INPUT", "OUTPUT", "COST", "$", "SHARE", "BLOCKED"]
    assert lines[1].split() == header
    for rank, (line, (team, sums)) in enumerate(zip(lines[2:5], ranked[:3], strict=True), 1):
        cells = line.split()
        assert cells[:3] == [str(rank), team or "(none)", str(sums["requests"])]
        assert cells[5] == dollars(sums["cost_nanos"])
    assert lines[5].split()[:2] == ["(other", f"{len(ranked) - 3})"]
    report = run_json(
        "usage", "-c", str(setup.config), "--by", "team", "--period", "today", "--top", "3"
    )
    assert lines[6] == f"Top 3 account for {format_bp(report['top_share_bp'])} of the spend."


def test_usage_csv(setup: Setup, traffic: list[LedgerRow]) -> None:
    result = run("usage", "-c", str(setup.config), "--by", "team", "--period", "today", "--csv")
    assert result.exit_code == 0, result.output
    lines = list(csv.reader(io.StringIO(result.stdout)))
    assert tuple(lines[0]) == CSV_HEADER
    ranked = _ranked(_totals(traffic, "team"))
    assert len(lines) == 1 + len(ranked)  # every group, not only the top N
    for line, (team, sums) in zip(lines[1:], ranked, strict=True):
        record = dict(zip(CSV_HEADER, line, strict=True))
        assert record["group"] == (team or "")
        assert int(record["requests"]) == sums["requests"]
        assert int(record["input_tokens"]) == sums["input_tokens"]
        assert int(record["output_tokens"]) == sums["output_tokens"]
        assert record["cost_usd"] == dollars(sums["cost_nanos"])


def test_usage_errors(setup: Setup) -> None:
    bad_group = run("usage", "-c", str(setup.config), "--by", "colour")
    assert bad_group.exit_code == 2
    assert "colour" in bad_group.stderr
    bad_period = run("usage", "-c", str(setup.config), "--period", "fortnight")
    assert bad_period.exit_code == 1
    assert "fortnight" in bad_period.stderr
    assert "today, yesterday, month" in bad_period.stderr


def test_usage_counts_in_english(setup: Setup, traffic: list[LedgerRow]) -> None:
    top_one = run(
        "usage", "-c", str(setup.config), "--by", "team", "--period", "today", "--top", "1"
    )
    assert top_one.exit_code == 0, top_one.output
    assert top_one.stdout.splitlines()[-1].startswith("Top 1 accounts for ")
    top_two = run(
        "usage", "-c", str(setup.config), "--by", "team", "--period", "today", "--top", "2"
    )
    assert top_two.stdout.splitlines()[-1].startswith("Top 2 account for ")


# ----------------------------------------------------------------------------- check-config


def test_check_config_ok(setup: Setup) -> None:
    result = run("check-config", "-c", str(setup.config))
    assert result.exit_code == 0, result.output
    models = len(yaml.safe_load(setup.config.read_text())["models"])
    assert result.stdout.startswith(
        f"{setup.config}: OK: 2 providers, {models} models, 3 teams in 1 org, "
    )
    assert "priced models (catalog as of " in result.stdout
    assert result.stderr == ""


def test_check_config_finds_the_config_through_the_environment(setup: Setup) -> None:
    result = run("check-config", env={"SPENDGATE_CONFIG": str(setup.config)})
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{setup.config}: OK")


def test_check_config_warns_about_unpriced_models_and_unset_secrets(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["models"]["acme-private-llm"] = {"provider": "openai"}

    config = write_config(tmp_path, "http://127.0.0.1:9", configure=configure)
    result = run("check-config", "-c", str(config), env={"SIM_ANTHROPIC_KEY": None})
    assert result.exit_code == 0, result.output
    models = len(yaml.safe_load(config.read_text())["models"])
    assert f"OK: 2 providers, {models} models" in result.stdout
    warnings = result.stderr.splitlines()
    assert (
        "warning: models.acme-private-llm: no price (requests will be refused until priced)"
        in warnings
    )
    assert (
        "warning: providers.anthropic.api_key_env: SIM_ANTHROPIC_KEY is not set in this "
        "environment" in warnings
    )
    assert len(warnings) == 2
    assert SIM_SECRET_OPENAI not in result.output


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert __version__ in result.stdout


@pytest.mark.parametrize("bucket", ["hour", "day"])
def test_usage_series_matches_the_ledger_and_the_admin_api(
    setup: Setup, traffic: list[LedgerRow], bucket: str
) -> None:
    """`usage --by-hour/--by-day`: per bucket and team, what the ledger's rows add up to
    (every row of today's traffic falls in this hour's or this day's bucket)."""
    report = run_json("usage", "-c", str(setup.config), f"--by-{bucket}", "--period", "today")
    assert report["bucket"] == bucket
    assert report["group_by"] == "team"
    rows = setup.harness.ledger()
    expected: dict[tuple[str, str | None], dict[str, int]] = {}
    size = 3_600 if bucket == "hour" else 86_400
    for row in rows:
        start = int(row.ts.timestamp()) // size * size
        at = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        sums = expected.setdefault(
            (at, row.team), {"requests": 0, "input_tokens": 0, "output_tokens": 0, "cost_nanos": 0}
        )
        sums["requests"] += row.blocked_by is None
        sums["input_tokens"] += row.input_tokens
        sums["output_tokens"] += row.output_tokens
        sums["cost_nanos"] += row.cost_nanos
    found = {
        (p["start"], p["group"]): {
            k: p[k] for k in ("requests", "input_tokens", "output_tokens", "cost_nanos")
        }
        for p in report["series"]
    }
    assert found == expected
    assert all(p["cost_usd"] == dollars(p["cost_nanos"]) for p in report["series"])
    api = http_request(
        "GET", f"{setup.harness.url}/admin/usage?bucket={bucket}&period=today", token=ADMIN
    ).json()
    api.pop("until")
    report.pop("until")
    assert api == report
    refused = http_request(
        "GET", f"{setup.harness.url}/admin/usage?bucket=week&period=today", token=ADMIN
    )
    assert refused.status == 400
    assert refused.json()["error"]["param"] == "bucket"


@pytest.mark.parametrize("bucket", ["hour", "day"])
def test_usage_series_as_csv(setup: Setup, traffic: list[LedgerRow], bucket: str) -> None:
    """`usage --by-hour --csv` and `?bucket=hour&format=csv` give the series as CSV, one line
    per point of the JSON series; both printed the JSON's table or the JSON itself."""
    series = run_json("usage", "-c", str(setup.config), f"--by-{bucket}", "--period", "today")
    expected = [
        [
            p["start"],
            p["group"] or "",
            p["cost_usd"],
            *(str(p[k]) for k in ("requests", "blocked", "input_tokens", "output_tokens")),
        ]
        for p in series["series"]
    ]
    assert expected
    header = ["start", "group", "cost_usd", "requests", "blocked", "input_tokens", "output_tokens"]
    result = run("usage", "-c", str(setup.config), f"--by-{bucket}", "--period", "today", "--csv")
    assert result.exit_code == 0, result.output
    assert list(csv.reader(io.StringIO(result.stdout))) == [header, *expected]
    answer = http_request(
        "GET",
        f"{setup.harness.url}/admin/usage?bucket={bucket}&period=today&format=csv",
        token=ADMIN,
    )
    assert answer.status == 200
    assert answer.headers["content-type"].startswith("text/csv")
    assert f'filename="usage-team-{bucket}.csv"' in answer.headers["content-disposition"]
    assert list(csv.reader(io.StringIO(answer.body.decode()))) == [header, *expected]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["usage", "--csv", "--json"], "--csv and --json"),
        (["usage", "--by-hour", "--by-day"], "--by-hour and --by-day"),
        (["usage", "--by-day", "--by-hour", "--csv"], "--by-hour and --by-day"),
        (["savings", "--json", "--csv"], "--csv and --json"),
        (["audit", "--csv", "--json"], "--csv and --json"),
    ],
)
def test_flags_asking_for_two_outputs_at_once_are_a_usage_error(
    setup: Setup, args: list[str], named: str
) -> None:
    """``usage --csv --json`` printed the CSV, ``--by-hour --by-day`` the series of the
    last one given: one flag silently dropped. A usage error now (exit 2), naming both."""
    result = run(*args, "-c", str(setup.config))
    assert result.exit_code == 2, result.output
    assert f"Error: {named} cannot be used together: choose one" in result.output
