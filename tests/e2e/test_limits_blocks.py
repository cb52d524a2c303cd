"""Every refusal is recorded, and the reports add them up exactly.

One gateway, one kind of refusal per key, through the real SDKs: a rate limit, a loop, an
open circuit breaker and a budget (OpenAI and Anthropic shapes). Each refusal is ONE ledger
row: ``blocked_by`` names the limit or budget, ``cost_nanos`` is 0, ``would_cost_nanos`` is
the request's worst case as admission prices it, ``status`` is what the client was sent.
``GET /admin/blocks``, ``spendgate blocks --json`` and the usage report's ``blocked``
columns sum exactly those rows. A shadow limit never refuses; the requests past it carry
``x-spendgate-shadow-blocked``, their rows list it, and the report counts the hits.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from click.testing import CliRunner

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.cli.main import cli
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.pipeline.worst_case import input_upper_bound

ADMIN = "blocks-admin-token"
OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
MAX_TOKENS = 100
FAST = {"x-sim-output-tokens": "75"}


def configure(data: dict[str, Any]) -> None:
    data["limits"] = [
        {"name": "rl", "scope": "user", "match": "u-rl", "requests": "2/hour"},
        {
            "name": "shadow-rpm",
            "scope": "user",
            "match": "u-shadow",
            "requests": "2/hour",
            "shadow": True,
        },
    ]
    data["budgets"] = [
        {"name": "bud", "scope": "user", "match": "u-bud", "limit_usd": "0.0001", "period": "daily"}
    ]
    data["runaway"] = {"loop_max_repeats": 2, "breaker_failures": 2, "breaker_cooldown_s": 60}


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def worst_nanos(gw: GatewayHarness, model: str, text: str) -> int:
    """What admission prices a request of `send` at: its worst case in nano-dollars."""
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    body = {"model": model, "messages": prompt(text), "max_tokens": MAX_TOKENS}
    counter = tokens.count_anthropic_input if "claude" in model else tokens.count_chat_input
    count = counter(model, body)
    cache = "claude" not in model  # Anthropic writes its cache only where a body asks
    worst = worst_case(
        route.price,
        input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
        input_exact=count.exact,
        ceiling=MAX_TOKENS,
        choices=1,
        cache_write=cache,
        cache_write_1h=cache,
    )
    return worst.amount(Unit.NANOS, MAX_TOKENS)


@dataclass
class Expected:
    """The block rows one key must have: (blocked_by, status, would_cost) each."""

    key_id: str
    blocks: list[tuple[str, int, int]] = field(default_factory=list)


@dataclass
class Traffic:
    gw: GatewayHarness
    config: Path
    keys: dict[str, Expected]
    shadow_key: str
    shadow_headers: list[str | None]


def send(gw: GatewayHarness, kind: str, secret: str, text: str, **headers: str) -> Any:
    """One request, no SDK retries; the refusal (an APIStatusError) if refused."""
    extra = {**FAST, **headers}
    try:
        if kind == "anthropic":
            with anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0) as client:
                return client.messages.with_raw_response.create(
                    model=ANTHROPIC_MODEL,
                    messages=prompt(text),
                    max_tokens=MAX_TOKENS,
                    extra_headers=extra,
                )
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as oai:
            return oai.chat.completions.with_raw_response.create(
                model=OPENAI_MODEL,
                messages=prompt(text),
                max_tokens=MAX_TOKENS,
                extra_headers=extra,
            )
    except (openai.APIStatusError, anthropic.APIStatusError) as error:
        return error


def refused(result: Any, status: int) -> None:
    assert isinstance(result, openai.APIStatusError | anthropic.APIStatusError), result
    assert result.status_code == status, result


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    folder = tmp_path_factory.mktemp("blocks")
    gw = GatewayHarness(
        folder / "spendgate.db", configure=configure, env={"SPENDGATE_ADMIN_TOKEN": ADMIN}
    ).start()
    try:
        keys: dict[str, Expected] = {}
        oai, ant = OPENAI_MODEL, ANTHROPIC_MODEL

        # a rate limit: two pass, the next two (one per dialect) are refused with 429
        secret = gw.create_key(name="rate", user="u-rl")
        keys["rate"] = Expected(gw.last_key_id)
        for i in range(2):
            send(gw, "openai", secret, f"rate {i}").parse()
        refused(send(gw, "openai", secret, "rate 2"), 429)
        refused(send(gw, "anthropic", secret, "rate 3"), 429)
        keys["rate"].blocks += [
            ("rl:requests/hour", 429, worst_nanos(gw, oai, "rate 2")),
            ("rl:requests/hour", 429, worst_nanos(gw, ant, "rate 3")),
        ]

        # a loop: the third send of one request
        secret = gw.create_key(name="loop")
        keys["loop"] = Expected(gw.last_key_id)
        for _ in range(2):
            send(gw, "openai", secret, "again and again").parse()
        refused(send(gw, "openai", secret, "again and again"), 429)
        keys["loop"].blocks.append(("loop-detection", 429, worst_nanos(gw, oai, "again and again")))

        # an open breaker: two upstream failures, then 503s that never reach it
        secret = gw.create_key(name="breaker")
        keys["breaker"] = Expected(gw.last_key_id)
        for i in range(2):
            refused(send(gw, "openai", secret, f"fail {i}", **{"x-sim-status": "500"}), 500)
        refused(send(gw, "openai", secret, "fail 2"), 503)
        refused(send(gw, "openai", secret, "fail 3"), 503)
        keys["breaker"].blocks += [
            ("circuit-breaker", 503, worst_nanos(gw, oai, "fail 2")),
            ("circuit-breaker", 503, worst_nanos(gw, oai, "fail 3")),
        ]

        # a budget: 429 insufficient_quota on OpenAI, 402 billing_error on Anthropic
        secret = gw.create_key(name="budget", user="u-bud")
        keys["budget"] = Expected(gw.last_key_id)
        send(gw, "openai", secret, "budget 0").parse()
        refused(send(gw, "openai", secret, "budget 1"), 429)
        refused(send(gw, "anthropic", secret, "budget 2"), 402)
        keys["budget"].blocks += [
            ("bud", 429, worst_nanos(gw, oai, "budget 1")),
            ("bud", 402, worst_nanos(gw, ant, "budget 2")),
        ]

        # a shadow limit: never refuses, marks the requests past it
        secret = gw.create_key(name="shadow", user="u-shadow")
        shadow_key = gw.last_key_id
        shadow_headers = []
        for i in range(4):
            raw = send(gw, "openai", secret, f"shadow {i}")
            raw.parse()
            # a shadow limit does not bind, so it is not reported: the upstream's own
            # header passes through unchanged
            assert raw.headers["x-ratelimit-limit-requests"] == "5000"
            shadow_headers.append(raw.headers.get("x-spendgate-shadow-blocked"))

        config = write_config(folder, gw.sim.url, db_path=gw.db_path, configure=configure)
        yield Traffic(gw, config, keys, shadow_key, shadow_headers)
    finally:
        gw.stop()


def all_blocks(gw: GatewayHarness) -> list[LedgerRow]:
    return gw.ledger(blocked=True)


def test_every_refusal_is_one_uncharged_row_with_its_worst_case(traffic: Traffic) -> None:
    gw = traffic.gw
    for name, expected in traffic.keys.items():
        rows = gw.ledger(expected.key_id, blocked=True)
        got = sorted((row.blocked_by, row.status, row.would_cost_nanos) for row in rows)
        assert got == sorted(expected.blocks), name
        for row in rows:
            assert row.cost_nanos == 0
            assert row.would_cost_nanos > 0
            assert (row.input_tokens, row.output_tokens) == (0, 0)
            assert row.error  # the message the client got
            assert not row.shadow_blocks
    assert len(all_blocks(gw)) == 7
    # the requests that did go upstream are not marked as blocked
    assert all(row.blocked_by is None for row in gw.ledger())


def test_admin_blocks_and_cli_blocks_sum_the_rows_exactly(traffic: Traffic) -> None:
    gw = traffic.gw
    rows = all_blocks(gw)
    counts = Counter(row.blocked_by for row in rows)
    costs: Counter[str] = Counter()
    for row in rows:
        assert row.blocked_by is not None
        costs[row.blocked_by] += row.would_cost_nanos
    shadow_rows = [row for row in gw.ledger(traffic.shadow_key) if row.shadow_blocks]

    result = http_request("GET", gw.url + "/admin/blocks?period=today", token=ADMIN)
    assert result.status == 200, result.body
    report = result.json()
    assert report["blocked"] == len(rows) == 7
    assert report["blocked_would_cost_nanos"] == sum(costs.values())
    by_name = {item["name"]: item for item in report["data"]}
    assert set(by_name) == {*counts, "shadow-rpm:requests/hour"}
    for name, count in counts.items():
        assert by_name[name]["blocked"] == count
        assert by_name[name]["blocked_would_cost_nanos"] == costs[name]
        assert by_name[name]["shadow_hits"] == 0
    shadow = by_name["shadow-rpm:requests/hour"]
    assert (shadow["blocked"], shadow["blocked_would_cost_nanos"]) == (0, 0)
    assert shadow["shadow_hits"] == len(shadow_rows) == 2
    assert shadow["shadow_cost_nanos"] == sum(row.cost_nanos for row in shadow_rows) > 0

    # without the admin token: refused
    assert http_request("GET", gw.url + "/admin/blocks").status == 401

    env = {
        "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
        "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
        "SPENDGATE_CONFIG": None,
        "SPENDGATE_ADMIN_TOKEN": None,
    }
    runner = CliRunner()
    done = runner.invoke(cli, ["blocks", "-c", str(traffic.config), "--json"], env=env)
    assert done.exit_code == 0, done.output
    printed = json.loads(done.stdout)
    for field_name in ("blocked", "blocked_would_cost_nanos", "blocked_would_cost_usd", "data"):
        assert printed[field_name] == report[field_name], field_name

    table = runner.invoke(cli, ["blocks", "-c", str(traffic.config)], env=env)
    assert table.exit_code == 0, table.output
    assert table.stdout.startswith(
        f"Refused {report['requests']} distinct request(s) (7 refusal(s), retries included) "
    )
    assert f"worst case ${report['requests_worst_case_usd']} " in table.stdout
    assert f"(${report['blocked_would_cost_usd']} over every refusal)" in table.stdout
    for name in by_name:
        assert name in table.stdout


def test_usage_report_groups_carry_their_blocks(traffic: Traffic) -> None:
    gw = traffic.gw
    result = http_request(
        "GET", gw.url + "/admin/usage?group_by=key&period=today&top=50", token=ADMIN
    )
    assert result.status == 200, result.body
    report = result.json()
    groups = {group["group"]: group for group in report["top"]}
    for name, expected in traffic.keys.items():
        group = groups[expected.key_id]
        assert group["blocked"] == len(expected.blocks), name
        assert group["blocked_would_cost_nanos"] == sum(cost for *_, cost in expected.blocks)
        # blocks are not requests and cost nothing
        upstream = gw.ledger(expected.key_id)
        assert group["requests"] == len(upstream)
        assert group["cost_nanos"] == sum(row.cost_nanos for row in upstream)
    assert groups[traffic.shadow_key]["blocked"] == 0
    assert groups[traffic.shadow_key]["requests"] == 4


def test_a_shadow_limit_never_refuses_but_marks_and_counts(traffic: Traffic) -> None:
    gw = traffic.gw
    name = "shadow-rpm:requests/hour"
    assert traffic.shadow_headers == [None, None, name, name]
    rows = sorted(gw.ledger(traffic.shadow_key), key=lambda row: row.ts)
    assert len(rows) == 4
    assert all(row.status == 200 for row in rows)
    assert sorted(row.shadow_blocks for row in rows) == [(), (), (name,), (name,)]
    assert gw.ledger(traffic.shadow_key, blocked=True) == []
    # it counts like a real one would
    views = gw.call(gw.gateway.budget_service.overview(name))
    (view,) = views
    assert view.to_json()["shadow"] is True
    assert (view.state.spent, view.state.reserved) == (4, 0)
