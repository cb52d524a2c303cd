"""``spendgate demo`` end to end (a real subprocess, no terminal), and its pure parts.

The summary's numbers are checked against the SQLite ledger itself: spend and requests
against the served rows, and every refusal line against the block rows
(``blocked_by``, their count and their worst-case cost)."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from spendgate.cli.main import cli
from spendgate.config import load_config
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
from spendgate.demo.view import RateMeter
from spendgate.domain.models import build_model_table
from spendgate.money import format_dollars
from spendgate.pricing.catalog import build_price_book

TOTAL = re.compile(r"Total spend: \$([0-9.]+) over ([0-9,]+) requests")
REFUSED = re.compile(r"Refused ([0-9,]+) requests? that could have cost up to \$([0-9.]+)")
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
        demo_command(db, "--duration", "3"),
        capture_output=True,
        text=True,
        timeout=120,
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
    ledger = read_ledger(db)
    assert ledger.rows > 0
    assert_summary_matches(out, ledger)


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
    assert (dana.scope.value, dana.match, dana.models) == ("user", BUDGETED_USER, ["claude-opus-*"])
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
