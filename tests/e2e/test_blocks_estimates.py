"""What refusals were worth: distinct refused requests apart from their retries, and a
realistic estimate beside the worst case, through a gateway on an injected clock with the
real OpenAI SDK (its own retries included). Every figure is computed here by hand.

gpt-4o-mini is priced $1/M input, $4/M output. Three keys:

* ``rl`` (user u-rl, 2 requests a second): answers of 40 and 60 tokens, then "q2" refused;
  the SDK retries it twice (``x-stainless-retry-count`` 1 and 2, after the ``retry-after``
  it is told), the client resends it at once (same content, no retry header); 10 s later
  two more answers (40, 60), "q2" once more and "q3", both refused. 6 refusal rows: 3
  distinct requests (q2, q2 ten seconds later, q3).
* ``big`` (no user): five answers of 500 tokens.
* ``new`` (user u-new, a $0.000001 budget): its first request is refused; it has no
  answers of its own, so its estimate takes every caller's median on the model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
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
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.reports import dollars
from spendgate.money import dollars_to_nanos, token_cost
from spendgate.pipeline.worst_case import input_upper_bound

ADMIN = "blocks-estimates-admin"
MODEL = "gpt-4o-mini"
NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
INPUT_RATE = dollars_to_nanos("1")
OUTPUT_RATE = dollars_to_nanos("4")


def configure(data: dict[str, Any]) -> None:
    data["models"][MODEL]["price"] = {"input": "1", "output": "4"}
    data["limits"] = [{"name": "rl", "scope": "user", "match": "u-rl", "requests": "2/second"}]
    data["budgets"] = [
        {
            "name": "tiny",
            "scope": "user",
            "match": "u-new",
            "limit_usd": "0.000001",
            "period": "daily",
        }
    ]


def body(text: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": max_tokens,
    }


def counted(text: str, max_tokens: int) -> int:
    return tokens.count_chat_input(MODEL, body(text, max_tokens)).tokens


def worst(gw: GatewayHarness, text: str, max_tokens: int) -> int:
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    assert route.price is not None
    count = counted(text, max_tokens)
    case = worst_case(
        route.price,
        input_tokens=input_upper_bound(count, route.price.max_input_tokens),
        input_exact=True,
        ceiling=max_tokens,
        choices=1,
    )
    return case.amount(Unit.NANOS, max_tokens)


def estimate(text: str, max_tokens: int, typical_output: int) -> int:
    """Input at its real rate, output at the typical size (never above the ceiling)."""
    output = min(typical_output, max_tokens)
    return token_cost(counted(text, max_tokens), INPUT_RATE) + token_cost(output, OUTPUT_RATE)


@dataclass
class Traffic:
    gw: GatewayHarness
    clock: ManualClock
    sdk_sends: int  # HTTP requests the SDK sent for the one refused call with retries
    config: Path


def ask(
    gw: GatewayHarness,
    secret: str,
    text: str,
    *,
    output: int,
    max_tokens: int,
    retries: int = 0,
    hooks: dict[str, Any] | None = None,
) -> int | None:
    """One call; the refusal's status, or None if answered."""
    with gw.sdk_client("openai", secret, hooks=hooks, max_retries=retries, timeout=10) as client:
        try:
            client.chat.completions.create(
                **body(text, max_tokens), extra_headers={"x-sim-output-tokens": str(output)}
            )
        except openai.APIStatusError as refused:
            return refused.status_code
    return None


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    folder = tmp_path_factory.mktemp("blocks-estimates")
    clock = ManualClock(NOW)
    gw = GatewayHarness(
        folder / "spendgate.db",
        configure=configure,
        clock=clock,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    try:
        rl = gw.create_key(name="rl", user="u-rl")
        assert ask(gw, rl, "q0", output=40, max_tokens=200) is None
        assert ask(gw, rl, "q1", output=60, max_tokens=200) is None
        big = gw.create_key(name="big")
        for i in range(5):
            assert ask(gw, big, f"big {i}", output=500, max_tokens=800) is None
        sent: list[Any] = []
        status = ask(
            gw, rl, "q2", output=60, max_tokens=200, retries=2, hooks={"request": [sent.append]}
        )
        assert status == 429
        assert ask(gw, rl, "q2", output=60, max_tokens=200) == 429  # resent at once
        clock.advance(10)  # the limit has room again: two more answers, then refusals
        assert ask(gw, rl, "q0 again", output=40, max_tokens=200) is None
        assert ask(gw, rl, "q1 again", output=60, max_tokens=200) is None
        assert ask(gw, rl, "q2", output=60, max_tokens=200) == 429  # a new request
        assert ask(gw, rl, "q3 is a longer question than q2", output=60, max_tokens=200) == 429
        new = gw.create_key(name="new", user="u-new")
        assert ask(gw, new, "first words", output=60, max_tokens=300) is not None
        config = write_config(folder, gw.sim.url, db_path=gw.db_path, configure=configure)
        yield Traffic(gw, clock, len(sent), config)
    finally:
        gw.stop()


def test_refused_rows_carry_what_an_estimate_needs(traffic: Traffic) -> None:
    rows = traffic.gw.ledger(blocked=True)
    assert traffic.sdk_sends == 3
    assert Counter((r.blocked_by, r.retry_count) for r in rows) == {
        ("rl:requests/second", 0): 4,  # q2 three times without the header, q3
        ("rl:requests/second", 1): 1,
        ("rl:requests/second", 2): 1,
        ("tiny", 0): 1,
    }
    rows.sort(key=lambda r: (r.ts, r.retry_count))
    q2 = [r for r in rows if r.blocked_by == "rl:requests/second" and "q3" not in (r.error or "")]
    q2 = [r for r in q2 if r.would_input_nanos == token_cost(counted("q2", 200), INPUT_RATE)]
    assert len(q2) == 5
    assert len({r.fingerprint for r in q2}) == 1
    assert q2[0].fingerprint is not None
    for row in q2:
        assert row.would_input_nanos == token_cost(counted("q2", 200), INPUT_RATE)
        assert (row.would_output_rate, row.would_ceiling) == (OUTPUT_RATE, 200)
        assert row.would_cost_nanos == worst(traffic.gw, "q2", 200)


def test_blocks_counts_distinct_requests_and_estimates_them_by_hand(traffic: Traffic) -> None:
    gw = traffic.gw
    answer = http_request("GET", gw.url + "/admin/blocks?period=today", token=ADMIN)
    assert answer.status == 200, answer.body
    report = answer.json()
    by_name = {row["name"]: row for row in report["data"]}
    rl, tiny = by_name["rl:requests/second"], by_name["tiny"]
    # u-rl's own answers on the model: 40 60 40 60 tokens; the lower median is 40
    rl_estimate = 2 * estimate("q2", 200, 40) + estimate("q3 is a longer question than q2", 200, 40)
    assert (rl["blocked"], rl["requests"]) == (6, 3)
    assert rl["estimate_nanos"] == rl_estimate
    q2_worst, q3_worst = worst(gw, "q2", 200), worst(gw, "q3 is a longer question than q2", 200)
    assert rl["blocked_would_cost_nanos"] == 5 * q2_worst + q3_worst
    assert rl["requests_worst_case_nanos"] == 2 * q2_worst + q3_worst
    # u-new has no answers: every caller's on the model, 40 40 60 60 500 x 5 -> 500, but
    # never above its ceiling of 300
    assert (tiny["blocked"], tiny["requests"]) == (1, 1)
    # the rate limit's 429s told the SDK to retry; the budget's 429 (insufficient_quota,
    # x-should-retry: false) did not: it was counted as retryable
    assert (rl["retryable"], tiny["retryable"]) == (6, 0)
    assert tiny["estimate_nanos"] == estimate("first words", 300, 300)
    assert report["blocked"] == 7
    assert report["requests"] == 4
    assert report["estimate_nanos"] == rl_estimate + tiny["estimate_nanos"]
    assert report["estimate_usd"] == dollars(report["estimate_nanos"])
    assert report["estimate_nanos"] < report["requests_worst_case_nanos"]
    assert report["requests_worst_case_nanos"] < report["blocked_would_cost_nanos"]

    env = {
        "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
        "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
        "SPENDGATE_CONFIG": None,
        "SPENDGATE_ADMIN_TOKEN": None,
    }
    table = CliRunner().invoke(
        cli, ["blocks", "-c", str(traffic.config), "--period", "all"], env=env
    )
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith(
        "Refused 4 distinct request(s) (7 refusal(s), retries included) since "
    )
    assert f"about ${dollars(report['estimate_nanos'])} at their real input rate" in table.stdout
    assert f"worst case ${dollars(report['requests_worst_case_nanos'])} " in table.stdout
