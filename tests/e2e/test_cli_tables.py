"""CLI tables never cut an identifier an operator may need to paste: every budget, limit
counter and member that ``spendgate budgets``, ``spendgate blocks`` and ``spendgate keys
list`` print, however long, pastes back into ``budgets --name``, ``budgets set-limit`` and
``budgets reset --member`` and names exactly what the table showed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner, Result

from e2e.process import write_config
from harness import GatewayHarness
from spendgate.cli.main import cli

LIMIT = "rate-ci-assistant-with-a-long-name"
USER = "a-developer-with-a-name-far-longer-than-sixteen"


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {  # one per key: its members are key ids
            "name": "every-key-gets-a-daily-budget-of-its-own",
            "scope": "key",
            "limit_usd": "1.00",
            "period": "daily",
        },
        {"name": "per-user-tokens", "scope": "user", "limit_tokens": 100_000, "period": "daily"},
    ]
    data["limits"] = [{"name": LIMIT, "scope": "user", "requests": "1/hour"}]


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


def run(*args: str) -> Result:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result


def cells(output: str, first: str, second: str) -> list[tuple[str, str]]:
    """The first column of a table (and its second, when ``second`` is a title): a
    left-aligned column starts where its title does and ends where the next one starts."""
    header, *lines = [line for line in output.splitlines() if line.strip()]
    one, two = header.index(first), header.index(second)
    rest = header.index(header.split()[2]) if len(header.split()) > 2 else None
    return [(line[one:two].strip(), line[two:rest].strip()) for line in lines]


def test_every_id_in_the_tables_pastes_back(gw: GatewayHarness, tmp_path: Path) -> None:
    secret = gw.create_key(name="cli-tables", user=USER)
    key_id = gw.last_key_id
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50
        )
        with pytest.raises(openai.RateLimitError):  # the limit's one request an hour is used
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=50
            )
    config = str(write_config(tmp_path, gw.sim.url, db_path=gw.db_path, configure=configure))

    shown = cells(run("budgets", "-c", config).output, "BUDGET", "MEMBER")
    counter = f"{LIMIT}:requests/hour"
    assert sorted(shown) == sorted(
        [
            ("every-key-gets-a-daily-budget-of-its-own", key_id),
            ("per-user-tokens", USER),
            (counter, USER),
        ]
    )
    for name, member in shown:
        only = cells(run("budgets", "-c", config, "--name", name).output, "BUDGET", "MEMBER")
        assert only == [(name, member)]
        reset = run("budgets", "reset", name, "--member", member, "-c", config)
        assert reset.output.strip() == f"{name}: 1 counter(s) reset"
        limit = "5.00" if name.startswith("every-key") else "1000"
        assert run("budgets", "set-limit", name, limit, "-c", config).output.startswith(name)

    blocked = run("blocks", "-c", config).output.splitlines()[1:]  # after the headline
    names = [by for by, _ in cells("\n".join(blocked), "BY", "BLOCKED")]
    assert names == [counter]
    for name in names:
        assert run("budgets", "set-limit", name, "2", "-c", config).output.startswith(name)

    listed = run("keys", "list", "-c", config).output
    header = listed.splitlines()[0]
    [line] = [line for line in listed.splitlines() if line.startswith(key_id)]
    user = line[header.index("USER") : header.index("STATE")].strip()
    assert user == USER
    reset = run("budgets", "reset", "per-user-tokens", "--member", user, "-c", config)
    assert reset.output.strip() == "per-user-tokens: 1 counter(s) reset"

    by_user = run("usage", "-c", config, "--by", "user", "--period", "all").output
    ranked = [line for line in by_user.splitlines() if line.strip().startswith("1 ")]
    assert [line.split()[1] for line in ranked] == [USER]  # in full, past 28 characters
    by_key = run("usage", "-c", config, "--by", "key", "--period", "all").output
    assert key_id in by_key.split()
