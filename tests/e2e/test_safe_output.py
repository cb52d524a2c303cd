"""Reports print stored strings escaped, and CSV cells never start a formula.

Keys whose names hold terminal commands (ESC[2J, an OSC sequence left open, a newline that
would draw a fake row, a carriage return, a BIDI override) cannot be created any more, but
a ledger written before that check, or by another tool, still holds them: they are put in
the store directly here, used for real requests through a running gateway, and every
human-readable report is then run through the real CLI (click's CliRunner) on the same
database. Nothing a terminal obeys may come out, and each row stays on one line.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner, Result
from rich.console import Console

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.cli.main import cli
from spendgate.clock import SystemClock
from spendgate.config.build import build_budget_book
from spendgate.demo.display import plain_line, render_live
from spendgate.demo.guards import Guards, live_line, summary_lines
from spendgate.demo.view import read_snapshot
from spendgate.domain.identity import ApiKey, display_hint, generate_secret, hash_secret
from spendgate.text import escape
from terminal import safe_lines

ENV: dict[str, str | None] = {
    "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
    "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
    "SPENDGATE_CONFIG": None,
    "SPENDGATE_ADMIN_TOKEN": None,
}

HOSTILE = (
    "eve\x1b[2J",  # clears the screen
    "osc\x1b]0;pwned",  # sets the window title, and the OSC left open swallows what follows
    "fake\n  9 forged",  # a fake row
    "cr\rOVERWRITE",  # back to the start of the line
    "bidi\u202eevil",  # the rest of the line reversed
)
FORMULAS = ('=HYPERLINK("http://x","y")', "+1", "-1", "@SUM(1+1)")
SESSION_BYTES = "s\x9b2J"  # sent as latin-1: byte 0x9b, the 8-bit CSI, in a client's header


def configure(data: dict[str, Any]) -> None:
    # Members of these budgets are the users (admin-typed) and sessions (client-sent).
    data["budgets"] = [
        {"name": "per-user", "scope": "user", "limit_usd": 100},
        {"name": "per-session", "scope": "session", "limit_usd": 100},
    ]
    data["orgs"] = {}  # any team name is taken, as before teams were declared


@dataclass
class Setup:
    harness: GatewayHarness
    config: Path
    key_ids: dict[str, str]  # hostile name -> key id


def insert_key(harness: GatewayHarness, label: str) -> tuple[str, str]:
    """A key stored as an older version (or another tool) could have stored it."""
    secret = generate_secret()
    key = ApiKey(
        id=f"key_{uuid.uuid4().hex[:16]}",
        key_hash=hash_secret(secret),
        hint=display_hint(secret),
        name=label,
        created_at=datetime.now(UTC).replace(microsecond=0),
        user=label,
        service=label,
        team=label,
        tags=(label,),
    )
    harness.call(harness.gateway.storage.insert_key(key))
    return key.id, secret


def chat(harness: GatewayHarness, secret: str) -> None:
    with openai.OpenAI(
        base_url=harness.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}]
        )


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    folder = tmp_path_factory.mktemp("safe")
    harness = GatewayHarness(folder / "spendgate.db", configure=configure).start()
    try:
        config = write_config(folder, harness.sim.url, db_path=harness.db_path, configure=configure)
        key_ids = {}
        for label in HOSTILE:
            key_ids[label], secret = insert_key(harness, label)
            chat(harness, secret)
        # A client's session header, with a byte that is not UTF-8, reaches the budgets view.
        answer = http_request(
            "POST",
            harness.openai_base_url + "/chat/completions",
            body={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
            token=secret,
            headers={"x-spendgate-session": SESSION_BYTES},
        )
        assert answer.status == 200, answer.body
        # A refusal row named by something hostile (a config older than its checks).
        row = harness.ledger()[0]
        refused = dataclasses.replace(
            row, request_id=f"req_{uuid.uuid4().hex}", blocked_by=HOSTILE[0], would_cost_nanos=7
        )
        harness.call(harness.gateway.storage.record(refused))
        yield Setup(harness, config, key_ids)
    finally:
        harness.stop()


def run(setup: Setup, *args: str) -> Result:
    result = CliRunner().invoke(
        cli, [*args, "-c", str(setup.config)], env=ENV, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return result


def rows_naming(lines: list[str], label: str, width: int) -> list[str]:
    """The lines that show ``label`` as a column ``width`` wide shows it: escaped, cut."""
    shown = escape(label)[:width]
    return [line for line in lines if shown in line]


# ----------------------------------------------------------------------------- reports


def test_the_hostile_names_are_really_stored(setup: Setup) -> None:
    users = {row.user for row in setup.harness.ledger()}
    assert set(HOSTILE) <= users
    # The byte 0x9b arrives as a lone surrogate, which SQLite cannot store: the session id
    # is kept escaped (before, the row failed to write and the client got a 503).
    sessions = {row.session_id for row in setup.harness.ledger()}
    assert "s\\udc9b2J" in sessions, sessions


@pytest.mark.parametrize("by", ["user", "team", "service", "key"])
def test_usage_table_shows_every_name_escaped_on_one_row(setup: Setup, by: str) -> None:
    lines = safe_lines(run(setup, "usage", "--by", by, "--period", "all").stdout)
    # title, header, one row per group, the closing share line
    assert len(lines) == 2 + len(HOSTILE) + 1, lines
    for label in HOSTILE:
        shown = setup.key_ids[label] if by == "key" else label
        [line] = rows_naming(lines, shown, 28)
        assert line.split()[-1].isdigit()  # the row's last column is on the same line


def test_blocks_shows_a_hostile_name_escaped(setup: Setup) -> None:
    lines = safe_lines(run(setup, "blocks", "--period", "all").stdout)
    [line] = rows_naming(lines, HOSTILE[0], 32)
    assert line.split()[1] == "1"  # blocked, on the same row
    assert len(lines) == 3  # the headline, the header, one row


def test_budgets_show_hostile_members_escaped(setup: Setup) -> None:
    lines = safe_lines(run(setup, "budgets").stdout)
    for label in HOSTILE:
        [line] = rows_naming(lines, label, 16)
        assert line.startswith("per-user")
    sessions = [line for line in lines if line.startswith("per-session")]
    assert len(sessions) == 1
    assert "s\\\\udc9b2J" in sessions[0]  # escaped once on the way in, once on the way out
    assert len(lines) == 1 + len(HOSTILE) + 1  # header, users, the session


@pytest.mark.parametrize("by", ["team", "service"])
def test_savings_table_shows_every_name_escaped(setup: Setup, by: str) -> None:
    lines = safe_lines(run(setup, "savings", "--by", by, "--period", "all").stdout)
    assert len(lines) == 3 + len(HOSTILE) + 1  # headline, spend line, header, groups, total
    for label in HOSTILE:
        [line] = rows_naming(lines, label, 28)
        assert line.split()[-1].isdigit()


def test_keys_list_shows_one_line_per_key(setup: Setup) -> None:
    lines = safe_lines(run(setup, "keys", "list").stdout)
    assert len(lines) == 1 + len(HOSTILE)
    for label, key_id in setup.key_ids.items():
        [line] = [line for line in lines if line.startswith(key_id)]
        assert escape(label)[:12] in line
        assert line.split()[-2:] == ["active", "-"]  # state, then no limits of its own


@pytest.mark.parametrize("label", HOSTILE)
def test_keys_show_prints_each_field_on_its_line(setup: Setup, label: str) -> None:
    lines = safe_lines(run(setup, "keys", "show", setup.key_ids[label]).stdout)
    fields = {line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in lines}
    for field in ("name", "user", "service", "team", "tags"):
        assert fields[field] == escape(label)
    assert len(lines) == len(fields)


def test_the_demo_views_show_names_escaped(setup: Setup) -> None:
    """The demo's live view, its plain lines and its summary, over the same ledger (the
    demo's --db may name one it did not write)."""
    harness = setup.harness
    snapshot = harness.call(
        read_snapshot(harness.gateway.storage, SystemClock(), elapsed_s=1, duration_s=1)
    )
    safe_lines(plain_line(snapshot))
    safe_lines(live_line(snapshot.blocks))
    book = build_budget_book(harness.gateway.config)
    safe_lines("\n".join(summary_lines(snapshot.blocks, Guards(), book)))
    console = Console(file=io.StringIO(), width=300, color_system=None)
    console.print(render_live(snapshot, harness.url))
    drawn = console.file.getvalue()  # type: ignore[attr-defined]
    lines = safe_lines(drawn)
    for label in HOSTILE:
        assert len(rows_naming(lines, label, 8)) >= 1


# ----------------------------------------------------------------------------- CSV


def test_usage_csv_neutralises_formulas(setup: Setup) -> None:
    harness = setup.harness
    for user in FORMULAS:  # plain text: such names may be created, and are exported safely
        created = run(setup, "keys", "create", "--name", "sheet", "--user", user, "--json")
        secret = created.stdout.split('"key": "')[1].split('"')[0]
        chat(harness, secret)
    exported = run(setup, "usage", "--by", "user", "--period", "all", "--csv").stdout
    rows = list(csv.reader(io.StringIO(exported)))
    assert rows[0][0] == "group"
    cells = {row[0] for row in rows[1:]}
    assert {"'" + user for user in FORMULAS} <= cells
    assert not [cell for cell in cells if cell.startswith(("=", "+", "-", "@", "\t", "\r"))]
    # The hostile names too: one row each, escaped, so the export prints safely and parses.
    assert {escape(label, reversible=False) for label in HOSTILE} <= cells
    assert len(rows) == 1 + len(HOSTILE) + len(FORMULAS)
    safe_lines(exported)
    for row in rows[1:]:
        if row[0].startswith("'"):
            assert row[1] == "1"  # the counts are numbers, left as they are


@pytest.mark.parametrize("label", HOSTILE)
def test_me_shows_a_hostile_key_escaped(setup: Setup, label: str) -> None:
    """`spendgate me` prints what the gateway says of the key: its name, user, team, tags
    and budget members, stored before names were checked, each escaped on its own line."""
    _, secret = insert_key(setup.harness, label)
    chat(setup.harness, secret)
    result = CliRunner().invoke(
        cli, ["me", "--key", secret, "--url", setup.harness.url], env=ENV, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    lines = safe_lines(result.stdout)
    assert f"  user: {escape(label)}" in lines
    assert f"  tags: {escape(label)}" in lines
    assert any(line.startswith(f"  per-user (user {escape(label)}, ") for line in lines)
