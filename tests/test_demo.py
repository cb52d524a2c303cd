"""``spendgate demo`` end to end (a real subprocess, no terminal), and its pure parts.

The summary's numbers are checked against the SQLite ledger itself: spend and requests
against the served rows, and every refusal line against the block rows
(``blocked_by``, their count and their worst-case cost). The routing chapter's numbers are
checked against its own ledger: spend per team in each phase, the saving, the heavy users'
share, the rule behind every request and what each shadow rule would have saved."""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from spendgate.cli.demo import this_command
from spendgate.cli.main import cli
from spendgate.clock import SystemClock
from spendgate.config import load_config
from spendgate.config.build import build_budget_book, build_model_table, build_router
from spendgate.demo import DemoOptions, DemoResult, run_demo
from spendgate.demo.display import render_live
from spendgate.demo.routing_run import routing_db_path
from spendgate.demo.routing_scenario import (
    ALIAS,
    CHEAP,
    PINNED_MODEL,
    PINNED_USERS,
    STRONG,
    Phase,
    chapter_calls,
    routing_config,
)
from spendgate.demo.runner import CONFIG_MARKER, write_explore_config
from spendgate.demo.scenario import (
    BUDGETED_USER,
    CAST,
    HEAVY_USERS,
    TEAMS,
    budget_usd,
    demo_config,
    guards_data,
)
from spendgate.demo.view import RateMeter, read_snapshot
from spendgate.domain.budgets import Caller
from spendgate.domain.identity import ApiKey
from spendgate.domain.models import Dialect
from spendgate.domain.reports import format_bp, share_bp
from spendgate.domain.routing import RouteFacts, Router
from spendgate.money import format_dollars
from spendgate.pricing.catalog import build_price_book
from spendgate.storage.open import open_storage

TOTAL = re.compile(r"Total spend: \$([0-9.]+) over ([0-9,]+) requests")
REFUSED = re.compile(
    r"\(([0-9,]+) refusals? in all, retries included: \$([0-9.]+) had each cost its worst case\)"
)
REFUSAL_LINE = re.compile(r"^    (\S+)\s+([0-9,]+)\s+\$([0-9.]+)  ", re.MULTILINE)
SERVED = "blocked_by IS NULL"


@dataclass(frozen=True)
class Ledger:
    rows: int  # requests that went upstream (block rows are not requests)
    cost_nanos: int
    by_team: dict[str | None, int]
    by_user: dict[str | None, int]
    blocks: dict[str, tuple[int, int]]  # blocked_by -> (refusals, their worst-case cost)
    block_statuses: set[int]
    retried: int  # served rows the client sent as an SDK retry


def read_ledger(db: Path) -> Ledger:
    conn = sqlite3.connect(db)
    rows, cost = conn.execute(
        f"SELECT COUNT(*), COALESCE(SUM(cost_nanos), 0) FROM ledger WHERE {SERVED}"  # noqa: S608
    ).fetchone()
    by_team = dict(conn.execute("SELECT team, SUM(cost_nanos) FROM ledger GROUP BY team"))
    by_user = dict(conn.execute('SELECT "user", SUM(cost_nanos) FROM ledger GROUP BY "user"'))
    blocks = {
        name: (count, worst)
        for name, count, worst in conn.execute(
            "SELECT blocked_by, COUNT(*), SUM(would_cost_nanos) FROM ledger "
            "WHERE blocked_by IS NOT NULL GROUP BY blocked_by"
        )
    }
    statuses = {
        status
        for (status,) in conn.execute(
            "SELECT DISTINCT status FROM ledger WHERE blocked_by IS NOT NULL"
        )
    }
    (retried,) = conn.execute(
        f"SELECT COUNT(*) FROM ledger WHERE {SERVED} AND retry_count > 0"  # noqa: S608
    ).fetchone()
    conn.close()
    return Ledger(rows, cost, by_team, by_user, blocks, statuses, retried)


def demo_command(db: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "spendgate", "demo", "--db", str(db), *extra]


def assert_summary_matches(output: str, ledger: Ledger) -> None:
    found = TOTAL.search(output)
    assert found, output
    assert found.group(1) == format_dollars(ledger.cost_nanos, 6).removeprefix("$")
    assert int(found.group(2).replace(",", "")) == ledger.rows
    assert_refusals_match(output, ledger)


def assert_refusals_match(output: str, ledger: Ledger) -> None:
    """The summary's refusals are the ledger's block rows: in total and line by line."""
    found = REFUSED.search(output)
    assert found, output
    refused = sum(count for count, _ in ledger.blocks.values())
    worst = sum(cost for _, cost in ledger.blocks.values())
    assert int(found.group(1).replace(",", "")) == refused
    assert found.group(2) == format_dollars(worst, 6).removeprefix("$")
    section = output[found.end() :]
    lines = {
        name: (int(count.replace(",", "")), cost)
        for name, count, cost in REFUSAL_LINE.findall(section)
    }
    expected = {
        name: (count, format_dollars(cost, 6).removeprefix("$"))
        for name, (count, cost) in ledger.blocks.items()
    }
    assert lines == expected, section


# ---------------------------------------------------------------------------- a full run


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    db = tmp_path_factory.mktemp("demo") / "demo.db"
    done = subprocess.run(
        demo_command(db, "--duration", "3", "--speed", "2"),
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    return done, db


@pytest.mark.slow
def test_the_demo_exits_0_with_plain_lines_without_a_terminal(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, db = run
    assert done.returncode == 0, done.stderr
    assert "\x1b[" not in done.stdout  # no terminal: no cursor movement, no colours
    assert re.search(r"^\[\s*\d+\.\ds\] \d+ requests", done.stdout, re.MULTILINE), done.stdout
    assert f"ledger    {db}" in done.stdout
    assert "calls failed" not in done.stdout, done.stdout
    assert "Traceback" not in done.stderr, done.stderr


@pytest.mark.slow
def test_the_ledger_has_rows_from_every_team(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    ledger = read_ledger(run[1])
    assert ledger.rows > 20
    assert set(ledger.by_team) == set(TEAMS)


@pytest.mark.slow
def test_the_summary_is_what_the_ledger_says(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, db = run
    assert_summary_matches(done.stdout, read_ledger(db))


@pytest.mark.slow
def test_spendgate_refuses_before_the_call_and_the_summary_says_what(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """The indexer's first burst of 8 meets a limit of 4 a second: refusals with a
    retry-after the client sits out, then served as SDK retries; every refusal is a block
    row with a refusal status and the summary counts exactly those rows."""
    done, db = run
    ledger = read_ledger(db)
    assert ledger.blocks.get("embeddings-per-key:requests/second", (0, 0))[0] >= 1, ledger.blocks
    assert ledger.block_statuses <= {402, 413, 429, 503}, ledger.block_statuses
    assert ledger.retried >= 1
    assert f"{ledger.retried} rate-limited request" in done.stdout
    assert "Budget dana-opus-daily (dana):" in done.stdout
    assert "Budget acme-monthly (acme):" in done.stdout
    assert_refusals_match(done.stdout, ledger)


@pytest.mark.slow
def test_a_few_heavy_users_drive_most_of_the_bill(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, db = run
    ledger = read_ledger(db)
    heavy = sum(cost for user, cost in ledger.by_user.items() if user in HEAVY_USERS)
    assert heavy * 2 > ledger.cost_nanos, ledger.by_user
    pareto = re.search(r"The top (\d+) of (\d+) users drive ([0-9.]+)% of the bill", done.stdout)
    assert pareto, done.stdout
    assert (int(pareto.group(1)), int(pareto.group(2))) == (4, 20)
    assert float(pareto.group(3)) > 50


@pytest.mark.slow
def test_the_printed_commands_explore_the_same_ledger(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, db = run
    config_path = Path(f"{db}.yaml")
    assert f"spendgate usage -c {config_path} --by user" in done.stdout
    assert load_config(config_path).storage.url == f"sqlite:///{db.resolve()}"
    ledger = read_ledger(db)
    result = CliRunner().invoke(
        cli, ["usage", "-c", str(config_path), "--by", "user", "--period", "all", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert orjson.loads(result.output)["total_cost_nanos"] == ledger.cost_nanos
    assert f"spendgate blocks -c {config_path} --period all" in done.stdout
    result = CliRunner().invoke(
        cli, ["blocks", "-c", str(config_path), "--period", "all", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert {
        row["name"]: (row["blocked"], row["blocked_would_cost_nanos"])
        for row in report["data"]
        if row["blocked"]
    } == ledger.blocks
    result = CliRunner().invoke(cli, ["budgets", "-c", str(config_path), "--json"])
    assert result.exit_code == 0, result.output
    views = {view["name"]: view for view in orjson.loads(result.output)}
    assert views["dana-opus-daily"]["member"] == BUDGETED_USER
    assert views["dana-opus-daily"]["reserved"] == 0  # nothing in flight after the demo
    assert views["dana-opus-daily"]["spent"] <= views["dana-opus-daily"]["limit"]


@pytest.mark.slow
def test_ctrl_c_stops_the_demo_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "demo.db"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        demo_command(db, "--duration", "60"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("Running for"):
                break
        time.sleep(2.5)
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert time.monotonic() - started < 20
    assert "stopped early by Ctrl-C" in out
    assert "Routing: the same" not in out  # the routing chapter is skipped
    ledger = read_ledger(db)
    assert ledger.rows > 0
    assert_summary_matches(out, ledger)


# ---------------------------------------------------------------------------- routing chapter

CHAPTER = re.compile(r"^Routing: the same (\d+) requests twice", re.MULTILINE)
Row = dict[str, Any]


def read_routing_phases(db: Path) -> tuple[list[Row], list[Row]]:
    """The chapter's served rows, oldest first, in two halves: each phase sent the same
    calls, and every row of the first arrived before the switch."""
    conn = sqlite3.connect(routing_db_path(db))
    conn.row_factory = sqlite3.Row
    rows = [
        dict(row)
        for row in conn.execute(f"SELECT * FROM ledger WHERE {SERVED} ORDER BY ts")  # noqa: S608
    ]
    conn.close()
    half = len(rows) // 2
    return rows[:half], rows[half:]


def cost(rows: list[Row]) -> int:
    return sum(row["cost_nanos"] for row in rows)


def dollars6(nanos: int) -> str:
    return re.escape(format_dollars(nanos, 6))


def saving(before: int, after: int) -> str:
    return re.escape(
        f"{format_dollars(before - after, 6)} ({format_bp(share_bp(before - after, before))})"
    )


@pytest.mark.slow
def test_the_routing_chapter_sends_the_same_requests_twice_and_shows_the_saving(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Same users, same token counts in both phases: only the models differ. The spend per
    team, the measured saving and the heavy users' share are the ledger's sums."""
    done, db = run
    found = CHAPTER.search(done.stdout)
    assert found, done.stdout
    calls = int(found.group(1))
    before, after = read_routing_phases(db)
    assert len(before) == len(after) == calls

    def usage(rows: list[Row]) -> list[tuple[Any, ...]]:
        keys = ("user", "team", "input_tokens", "cached_input_tokens", "output_tokens")
        return sorted((tuple(row[k] for k in keys) for row in rows), key=repr)

    assert usage(before) == usage(after)
    chapter = done.stdout[found.start() :]
    for team in TEAMS:
        was = cost([row for row in before if row["team"] == team])
        now = cost([row for row in after if row["team"] == team])
        line = rf"^    {team}\s+{dollars6(was)}\s+{dollars6(now)}\s+{saving(was, now)}$"
        assert re.search(line, chapter, re.MULTILINE), (team, chapter)
    was, now = cost(before), cost(after)
    assert now < was
    total = rf"^    all\s+{dollars6(was)}\s+{dollars6(now)}\s+{saving(was, now)}$"
    assert re.search(total, chapter, re.MULTILINE), chapter
    assert re.search(rf"Measured saving: {saving(was, now)} over {calls} requests", chapter)
    heavy_before = cost([row for row in before if row["user"] in HEAVY_USERS])
    heavy_after = cost([row for row in after if row["user"] in HEAVY_USERS])
    assert heavy_before * 2 > was  # a few heavy users drive the bill
    share = (format_bp(share_bp(heavy_before, was)), format_bp(share_bp(heavy_after, now)))
    assert f": {share[0]} of the spend before, {share[1]} after." in chapter


@pytest.mark.slow
def test_the_routing_chapter_names_the_rule_behind_every_request(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Before: `default` on the strongest models with the cheaper default in shadow. After
    the reload: `default` on the cheaper models, team ml's Opus rewritten (its saving in
    baseline_cost_nanos), team web's Opus shadowed. Each printed line is one ledger group."""
    done, db = run
    before, after = read_routing_phases(db)
    chapter = done.stdout[done.stdout.index("Routing: the same") :]
    asked = [row for row in before + after if row["requested_model"] == ALIAS]
    assert asked
    for row in (r for r in before if r["requested_model"] == ALIAS):
        assert row["route_kind"] == "alias"
        assert row["routed_model"] in STRONG.values()
        assert row["shadow_rule"] in {"try-sonnet", "try-4o-mini"}
        assert row["shadow_model"] in CHEAP.values()
        assert row["shadow_cost_nanos"] < row["cost_nanos"]
    for row in (r for r in after if r["requested_model"] == ALIAS):
        assert row["route_rule"] in {"default-anthropic", "default-openai"}
        assert row["routed_model"] in CHEAP.values()
        assert row["shadow_rule"] is None
    pinned = [r for r in after if r["requested_model"] == PINNED_MODEL]
    assert {r["user"] for r in pinned} == set(PINNED_USERS)
    for row in pinned:
        if row["team"] == "ml":
            assert (row["route_rule"], row["route_kind"]) == ("ml-no-opus", "rewrite")
            assert row["routed_model"] == CHEAP["anthropic"]
            assert row["baseline_cost_nanos"] > row["cost_nanos"]
        else:
            assert (row["route_rule"], row["routed_model"]) == (None, PINNED_MODEL)
            assert row["shadow_rule"] == "web-no-opus"
            assert row["shadow_cost_nanos"] < row["cost_nanos"]
    for phase, rows in (("before", before), ("after", after)):
        groups: dict[tuple[Any, ...], list[Row]] = {}
        for row in rows:
            key = (
                row["route_rule"],
                row["route_kind"],
                row["requested_model"],
                row["routed_model"],
            )
            groups.setdefault(key, []).append(row)
        for (rule, kind, requested, routed), group in groups.items():
            moved = routed if requested == routed else f"{requested} -> {routed}"
            line = (
                rf"^    {phase}\s+{re.escape(rule or '(by name)')}\s+{re.escape(kind or '-')}\s+"
                rf"{re.escape(moved)}\s+{len(group)}\s+{dollars6(cost(group))}"
            )
            assert re.search(line, chapter, re.MULTILINE), (line, chapter)
        shadows: dict[str, list[Row]] = {}
        for row in rows:
            if row["shadow_rule"]:
                shadows.setdefault(row["shadow_rule"], []).append(row)
        assert shadows
        for rule, group in shadows.items():
            would = sum(row["shadow_cost_nanos"] for row in group)
            line = (
                rf"    {phase}\s+{rule} would have sent {len(group)} requests to \S+: "
                rf"{dollars6(would)} instead of {dollars6(cost(group))}"
            )
            assert re.search(line, chapter), (line, chapter)
    # The shadow aliases predicted the switch to the nano: same usage, the cheaper prices.
    predicted = sum(r["cost_nanos"] - r["shadow_cost_nanos"] for r in before if r["shadow_rule"])
    measured = cost([r for r in before if r["requested_model"] == ALIAS]) - cost(
        [r for r in after if r["requested_model"] == ALIAS]
    )
    assert predicted == measured > 0
    assert f"predicted a saving of {format_dollars(predicted, 6)}" in chapter
    assert f"{format_dollars(measured, 6)} saved." in chapter


@pytest.mark.slow
def test_the_routing_ledger_is_explored_with_the_savings_report(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    done, db = run
    config_path = Path(f"{routing_db_path(db)}.yaml")
    assert f"spendgate savings -c {config_path} --period all" in done.stdout
    before, after = read_routing_phases(db)
    result = CliRunner().invoke(
        cli, ["savings", "-c", str(config_path), "--period", "all", "--json"]
    )
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["total"]["cost_nanos"] == cost(before) + cost(after)
    rewritten = [row for row in after if row["route_kind"] == "rewrite"]
    assert report["total"]["saved_nanos"] == sum(
        row["baseline_cost_nanos"] - row["cost_nanos"] for row in rewritten
    )


def test_a_taken_port_is_a_clear_error_and_leaks_nothing(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            demo_command(tmp_path / "demo.db", "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert "the demo could not start" in done.stderr
    assert "address already in use" in done.stderr
    assert "Unclosed" not in done.stderr  # the gateway closed its pool and storage


# ---------------------------------------------------------------------------- pure parts


def test_the_demo_config_prices_every_model(tmp_path: Path) -> None:
    config = demo_config("http://127.0.0.1:9", tmp_path / "demo.db")
    table = build_model_table(config, build_price_book(config))
    for name in table.names():
        route = table.get(name)
        assert route is not None, name
        assert route.price is not None, name
    assert {person.team for person in CAST} == set(TEAMS)
    assert config.all_teams() == set(TEAMS)


def test_the_cast_has_about_twenty_users_and_a_few_heavy_ones() -> None:
    users = {person.user for person in CAST if person.user}
    assert len(users) == 20
    assert users > HEAVY_USERS
    assert len(HEAVY_USERS) == 4
    assert BUDGETED_USER in HEAVY_USERS
    services = {person.service for person in CAST}
    assert {"review-bot", "support-chat", "claude-code", "codex", "notebook"} <= services
    assert any(person.workload.stuck for person in CAST)
    assert any(person.workload.burst > 1 for person in CAST)


def test_the_demo_config_declares_budgets_limits_and_loop_detection(tmp_path: Path) -> None:
    config = demo_config("http://127.0.0.1:9", tmp_path / "demo.db", duration_s=20, speed=1)
    budgets = {budget.name: budget for budget in config.budgets}
    dana = budgets["dana-opus-daily"]
    assert (dana.scope.value, dana.match, dana.models) == (
        "user",
        BUDGETED_USER,
        ("claude-opus-*",),
    )
    assert dana.limit_usd == budget_usd(20, 1)
    assert {limit.name for limit in config.limits} == {"embeddings-per-key", "tokens-per-user"}
    assert any(limit.shadow for limit in config.limits)
    assert config.runaway.loop_max_repeats == 3
    # Longer or faster runs spend more, so the budget grows with them and still runs out.
    assert budget_usd(60, 1) > budget_usd(20, 1) > budget_usd(3, 1)
    assert budget_usd(20, 2) == budget_usd(40, 1)


def test_the_explore_config_carries_the_guards(tmp_path: Path) -> None:
    written = write_explore_config(tmp_path / "demo.db", guards_data(20, 1))
    assert written is not None
    config = load_config(written)
    assert [budget.name for budget in config.budgets] == ["dana-opus-daily", "acme-monthly"]
    assert config.runaway.loop_max_repeats == 3


def test_the_rate_is_measured_over_a_sliding_window() -> None:
    meter = RateMeter(window_s=2.0)
    assert meter.add(0.0, 0) == 0.0
    assert meter.add(1.0, 10) == 10.0
    assert meter.add(2.0, 30) == 15.0
    assert meter.add(4.0, 30) == 0.0  # nothing in the last two seconds


def test_the_explore_config_never_replaces_a_foreign_file(tmp_path: Path) -> None:
    db = tmp_path / "spend.db"
    written = write_explore_config(db)
    assert written == tmp_path / "spend.db.yaml"
    assert written.read_text(encoding="utf-8").startswith(CONFIG_MARKER)
    assert write_explore_config(db) == written  # the demo's own file is refreshed
    written.write_text("storage: {url: 'sqlite:///mine.db'}\n", encoding="utf-8")
    assert write_explore_config(db) is None
    assert "mine.db" in written.read_text(encoding="utf-8")


def _caller(team: str, user: str) -> Caller:
    key = ApiKey(
        id="key_1",
        key_hash="h",
        hint="sk-...",
        name="k",
        created_at=datetime(2026, 1, 1, tzinfo=UTC),
        user=user,
        team=team,
        org="acme",
    )
    return Caller(key=key, org="acme", model="default")


def _router(phase: Phase, tmp_path: Path) -> Router:
    config = routing_config("http://127.0.0.1:9", tmp_path / "r.db", phase)
    table = build_model_table(config, build_price_book(config))
    return build_router(config, table, build_budget_book(config))


def test_the_routing_phases_differ_in_the_default_and_the_rules(tmp_path: Path) -> None:
    before = routing_config("http://127.0.0.1:9", tmp_path / "r.db", Phase.BEFORE)
    after = routing_config("http://127.0.0.1:9", tmp_path / "r.db", Phase.AFTER)
    # Everything a hot reload refuses to change is the same; the guards are not there.
    assert (before.server, before.storage, before.models) == (
        after.server,
        after.storage,
        after.models,
    )
    assert not before.budgets
    assert not before.limits
    route = _router(Phase.BEFORE, tmp_path).route
    facts, used = RouteFacts(), dict[str, int]()
    decision = route(ALIAS, Dialect.ANTHROPIC, _caller("web", "ana"), facts, used)
    assert (decision.model, decision.rule) == (STRONG["anthropic"], "default-anthropic")
    assert (decision.shadow_model, decision.shadow_rule) == (CHEAP["anthropic"], "try-sonnet")
    decision = route(ALIAS, Dialect.OPENAI, _caller("data", "mei"), facts, used)
    assert (decision.model, decision.shadow_rule) == (STRONG["openai"], "try-4o-mini")
    route = _router(Phase.AFTER, tmp_path).route
    decision = route(ALIAS, Dialect.OPENAI, _caller("data", "mei"), facts, used)
    assert (decision.model, decision.rule, decision.shadow_rule) == (
        CHEAP["openai"],
        "default-openai",
        None,
    )
    decision = route(PINNED_MODEL, Dialect.ANTHROPIC, _caller("ml", "dana"), facts, used)
    assert (decision.model, decision.rule) == (CHEAP["anthropic"], "ml-no-opus")
    decision = route(PINNED_MODEL, Dialect.ANTHROPIC, _caller("web", "tomas"), facts, used)
    assert (decision.model, decision.rule) == (PINNED_MODEL, None)
    assert (decision.shadow_model, decision.shadow_rule) == (CHEAP["anthropic"], "web-no-opus")


def test_the_routing_chapter_calls_are_drawn_once_for_both_phases() -> None:
    calls = chapter_calls(7)
    assert calls == chapter_calls(7)
    assert calls != chapter_calls(8)
    asked = {item.call.model for item in calls}
    assert asked == {ALIAS, PINNED_MODEL, "text-embedding-3-small"}
    pinned = {item.person.user for item in calls if item.call.model == PINNED_MODEL}
    assert pinned == set(PINNED_USERS)
    assert {item.person.team for item in calls if item.call.model == ALIAS} == set(TEAMS)
    assert not any(item.person.workload.stuck for item in calls)
    heavy = sum(1 for item in calls if item.person.user in HEAVY_USERS)
    assert 0 < heavy < len(calls) // 2  # a few heavy users, many light calls


# ---------------------------------------------------------------------------- the story


@pytest.mark.slow
def test_the_budget_chapter_ends_refusing_and_the_summary_says_so(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Dana's chapter is counted, not timed: every run clamps her and then refuses her; her
    budget's line says it is refusing, never "(ok)" next to refusals."""
    done, db = run
    ledger = read_ledger(db)
    assert ledger.blocks["dana-opus-daily"][0] >= 1, ledger.blocks
    assert ledger.blocks["loop-detection"][0] >= 1, ledger.blocks
    line = re.search(r"^  Budget dana-opus-daily \(dana\): .*$", done.stdout, re.MULTILINE)
    assert line, done.stdout
    assert "% used (refusing: what is left is less than a request's worst case)" in line[0]
    assert "heaviest" not in done.stdout
    assert "on Claude Opus all day in Claude Code" in done.stdout


@pytest.mark.slow
def test_the_printed_commands_work_literally_in_a_fresh_shell(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    """Each explore command, pasted into a shell whose PATH has no spendgate on it."""
    done, _ = run
    start = done.stdout.index("Explore it")
    commands = [
        line.strip()
        for line in done.stdout[start:].splitlines()
        if line.startswith("  ") and " -c " in line
    ]
    assert len(commands) >= 8, done.stdout[start:]
    env = {"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/tmp")}
    one_of_each = {command.split(" -c ")[0]: command for command in commands}  # usage, ...
    assert len(one_of_each) >= 5, commands
    for command in one_of_each.values():
        ran = subprocess.run(
            ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=60
        )
        assert ran.returncode == 0, (command, ran.stderr)


def test_the_command_printed_is_the_running_spendgate(tmp_path: Path) -> None:
    """``spendgate`` only when that name on the PATH is this program; else its full path,
    or ``python -m spendgate``."""
    script = tmp_path / "bin" / "spendgate"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n", encoding="utf-8")
    script.chmod(0o755)
    path = os.environ["PATH"]
    try:
        os.environ["PATH"] = "/usr/bin:/bin"
        assert this_command(str(script)) == str(script)
        os.environ["PATH"] = f"{script.parent}:/usr/bin:/bin"
        assert this_command(str(script)) == "spendgate"
        assert this_command("spendgate") == "spendgate"
    finally:
        os.environ["PATH"] = path
    assert this_command("/x/spendgate/__main__.py") == f"{sys.executable} -m spendgate"


@pytest.mark.slow
def test_the_live_view_fits_80x24_with_the_refusals_in_sight(
    run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    _, db = run

    async def snapshot_of_the_run() -> Any:
        storage = open_storage(f"sqlite:///{db}")
        await storage.open()
        try:
            return await read_snapshot(storage, SystemClock(), elapsed_s=3, duration_s=3)
        finally:
            await storage.close()

    snapshot = asyncio.run(snapshot_of_the_run())
    assert snapshot.blocks.blocked > 0
    for width, height, least_users in ((80, 24, 5), (100, 30, 8), (60, 12, 0)):
        console = Console(file=io.StringIO(), width=width, height=height, force_terminal=True)
        lines = console.render_lines(render_live(snapshot, "http://127.0.0.1:8700", console))
        text = ["".join(segment.text for segment in line).rstrip() for line in lines]
        assert len(text) < height, "\n".join(text)
        assert any(line.startswith("Refused before the call: ") for line in text), text
        assert all(len(line) <= width for line in text)
        users = [line for line in text if re.match(r"^(dana|tomas|mei|raj) ", line)]
        assert len(users) >= min(least_users, 4), "\n".join(text)
        if least_users >= 5:
            assert "Top users" in text


@pytest.mark.slow
def test_the_chapters_happen_on_a_slowed_machine(tmp_path: Path) -> None:
    """A loaded machine, made on purpose: the event loop that runs the simulator, the
    gateway and the traffic is blocked 3/4 of the time, and the run lasts 1 s, far less
    than Dana needs to spend her budget. The story still happens, in the same order and
    by request counts: clamped, then refused (after the deadline: her session goes on
    until then), the indexer's burst rate-limited and retried, the stuck agent stopped,
    and the routing chapter's saving."""
    db = tmp_path / "demo.db"

    async def slowed() -> DemoResult:
        done = asyncio.Event()

        async def hog() -> None:
            while not done.is_set():
                time.sleep(0.03)  # the loop can do nothing else: a busy machine
                await asyncio.sleep(0.01)

        hogging = asyncio.create_task(hog())
        try:
            options = DemoOptions(duration_s=1, db_path=db, speed=2)
            return await run_demo(options, Console(file=io.StringIO(), width=120))
        finally:
            done.set()
            await hogging

    result = asyncio.run(slowed())
    assert not result.interrupted
    assert result.open_chapters == ()
    ledger = read_ledger(db)
    assert result.guards.clamped >= 1  # clamp
    assert ledger.blocks["dana-opus-daily"][0] >= 1  # refuse
    assert ledger.blocks["embeddings-per-key:requests/second"][0] >= 1  # rate limit
    assert ledger.retried >= 1  # ... sat out and served on a retry
    assert ledger.blocks["loop-detection"][0] >= 1  # loop
    conn = sqlite3.connect(db)
    (first_ts,) = conn.execute(
        "SELECT MIN(ts) FROM ledger WHERE blocked_by = 'dana-opus-daily'"
    ).fetchone()
    (started_ts,) = conn.execute("SELECT MIN(ts) FROM ledger").fetchone()
    conn.close()
    assert first_ts - started_ts > 1_000  # refused after the deadline: counted, not timed
    assert result.routing is not None  # routing saving
    assert result.routing.after.cost_nanos < result.routing.before.cost_nanos
