"""``usage --by user``: service traffic (keys without a user) is kept out of the users'
ranking, on a line of its own, and the top N's share is stated of the users' spend and
of every caller's, with how many of each. Real gateway, real OpenAI SDK, injected clock;
every share computed here by hand.

gpt-4o-mini is priced $0/M input and $1/M output, so a request costs 1,000 nano-dollars
per output token. Users: ann 400 tokens, bob 300, cy 200, di 100 (1,000 in all); two
service keys (no user): indexer 500, digest 250. The services together outspend every
user, and ranked among users they would take the top place.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.cli.main import cli
from spendgate.clock import ManualClock
from spendgate.domain.reports import dollars, format_bp

ADMIN = "usage-users-admin"
PER_TOKEN = 1_000
USERS = {"ann": 400, "bob": 300, "cy": 200, "di": 100}
SERVICES = {"indexer": 500, "digest": 250}
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def configure(data: dict[str, Any]) -> None:
    data["models"]["gpt-4o-mini"]["price"] = {"input": "0", "output": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayHarness, Path]]:
    folder = tmp_path_factory.mktemp("usage-users")
    gw = GatewayHarness(
        folder / "spendgate.db",
        configure=configure,
        clock=ManualClock(NOW),
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    try:
        callers = [(name, {"user": name}, out) for name, out in USERS.items()]
        callers += [(name, {"service": name}, out) for name, out in SERVICES.items()]
        for name, labels, output in callers:
            secret = gw.create_key(name=name, **labels)
            with gw.sdk_client("openai", secret, max_retries=0, timeout=10) as client:
                client.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": f"{name} asks"}],
                    max_tokens=1000,
                    extra_headers={"x-sim-output-tokens": str(output)},
                )
        config = write_config(folder, gw.sim.url, db_path=gw.db_path, configure=configure)
        yield gw, config
    finally:
        gw.stop()


def share(part: int, whole: int) -> int:
    """Basis points, rounded half up, by hand."""
    return (2 * part * 10_000 + whole) // (2 * whole)


USERS_COST = sum(USERS.values()) * PER_TOKEN  # 1,000,000
SERVICES_COST = sum(SERVICES.values()) * PER_TOKEN  # 750,000
ALL_COST = USERS_COST + SERVICES_COST
TOP2 = (400 + 300) * PER_TOKEN


def test_users_are_ranked_among_users_and_services_stand_apart(
    setup: tuple[GatewayHarness, Path],
) -> None:
    gw, _ = setup
    answer = http_request(
        "GET", gw.url + "/admin/usage?group_by=user&period=today&top=2", token=ADMIN
    )
    assert answer.status == 200, answer.body
    report = answer.json()
    assert [(g["rank"], g["group"], g["cost_nanos"]) for g in report["top"]] == [
        (1, "ann", 400 * PER_TOKEN),
        (2, "bob", 300 * PER_TOKEN),
    ]
    assert [g["share_bp"] for g in report["top"]] == [4000, 3000]  # of the users' spend
    assert (report["rest"]["groups"], report["rest"]["cost_nanos"]) == (2, 300 * PER_TOKEN)
    assert report["top_share_bp"] == share(TOP2, USERS_COST) == 7000
    assert report["users"] == {
        "count": 4,
        "cost_nanos": USERS_COST,
        "cost_usd": dollars(USERS_COST),
        "top_share_bp": 7000,
    }
    services = report["services"]
    assert (services["keys"], services["requests"], services["cost_nanos"]) == (
        2,
        2,
        SERVICES_COST,
    )
    assert services["share_bp"] == share(SERVICES_COST, ALL_COST) == 4286
    assert report["callers"] == {
        "count": 6,
        "cost_nanos": ALL_COST,
        "cost_usd": dollars(ALL_COST),
        "top_share_bp": share(TOP2, ALL_COST),
    }
    assert report["callers"]["top_share_bp"] == 4000
    assert report["total_cost_nanos"] == ALL_COST  # the whole bill, as before


def test_the_table_states_both_shares_with_their_counts(
    setup: tuple[GatewayHarness, Path],
) -> None:
    _, config = setup
    env = {
        "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
        "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
        "SPENDGATE_CONFIG": None,
        "SPENDGATE_ADMIN_TOKEN": None,
    }
    result = CliRunner().invoke(
        cli,
        ["usage", "-c", str(config), "--by", "user", "--period", "all", "--top", "2"],
        env=env,
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].endswith(
        f"${dollars(ALL_COST)} over 6 caller(s): ${dollars(USERS_COST)} over 4 user(s), "
        f"${dollars(SERVICES_COST)} over 2 service key(s) (keys without a user; shares: a "
        "user's of the users' spend, the services' of every caller's)"
    )
    ranked = [line.split()[:2] for line in lines[2:4]]
    assert ranked == [["1", "ann"], ["2", "bob"]]
    assert lines[4].split()[:2] == ["(other", "2)"]
    assert lines[5].split()[:3] == ["(services:", "2", "key(s))"]
    assert lines[5].split()[-2:] == [format_bp(4286), "0"]
    assert lines[6] == (
        f"Top 2 of 4 users account for 70.00% of the users' spend (${dollars(USERS_COST)}); "
        f"of all 6 callers (4 users, 2 service key(s)), for 40.00% of ${dollars(ALL_COST)}."
    )
    assert "(none)" not in result.stdout
