"""A budget reads what it is doing: ``held`` while requests in flight hold all its room,
``refusing`` once it has refused someone though its spent amount leaves room, and every
request charged more than it reserved is counted (``overruns``) in ``spendgate budgets``
and ``spendgate blocks`` at once. Driven by what is in flight, not by timing: a stream the
test stops reading holds its reservation until the test closes it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from click.testing import CliRunner

from e2e.process import HttpResult, http_request, write_config
from harness import GatewayHarness
from spendgate.cli.main import cli

ADMIN = "sg-admin-states-test"
TOKENS = 2_000
USD_LIMIT = 300_000  # nano-dollars
# gpt-4o-mini at $0.15/M input, $0.60/M output: 1 input token and 100 output tokens
MINIMAL = 150 + 100 * 600
SMALL = [{"role": "user", "content": "A small request."}]


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "ml-tokens", "scope": "team", "match": "ml", "limit_tokens": TOKENS},
        {  # one user's dollars, on one model: its minimal request is MINIMAL nano-dollars
            "name": "cam-usd",
            "scope": "user",
            "match": "cam",
            "models": ["gpt-4o-mini"],
            "limit_usd": "0.0003",
        },
        {  # soft: it counts a stored conversation as the body shows it, and is told later
            "name": "web-soft",
            "scope": "team",
            "match": "web",
            "limit_usd": "1.00",
            "hard": False,
            "hidden_input": "estimate",
        },
    ]
    data["budgets"] = [{**spec, "period": "daily"} for spec in data["budgets"]]
    data["budget_settings"] = {"min_output_tokens": 100, "admission_wait_s": 0}


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path / "spendgate.db", configure=configure, env={"SPENDGATE_ADMIN_TOKEN": ADMIN}
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def admin(gw: GatewayHarness, path: str) -> HttpResult:
    result = http_request("GET", gw.url + path, token=ADMIN)
    assert result.status == 200, result.body
    return result


def view(gw: GatewayHarness, name: str, member: str) -> dict[str, Any]:
    views = admin(gw, "/admin/budgets").json()["data"]
    return next(v for v in views if (v["name"], v["member"]) == (name, member))


def test_held_while_in_flight_then_refusing_once_it_refused(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="states-ml", team="ml", user="ada")
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Count to a thousand, slowly."}],
        "max_tokens": 5_000,  # clamped to what the 2,000 tokens leave: all of the room
        "stream": True,
    }
    slow = {"x-sim-output-tokens": "400", "x-sim-chunk-delay-ms": "500"}
    headers = {"authorization": f"Bearer {secret}", **slow}
    with (
        httpx2.Client(timeout=30) as http,
        http.stream(
            "POST", f"{gw.openai_base_url}/chat/completions", json=body, headers=headers
        ) as stream,
    ):
        assert stream.status_code == 200
        lines = stream.iter_lines()  # (kept: a dropped iterator closes the response)
        next(lines)  # the first event: the request is in flight
        held = view(gw, "ml-tokens", "ml")
        assert (held["spent"], held["reserved"], held["remaining"]) == (0, TOKENS, 0)
        assert held["state"] == "held"
        assert held["refused_last_minute"] == 0

        # room is held, not spent: the next request is told to retry (no wait configured)
        sdk = openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0)
        with sdk, pytest.raises(openai.RateLimitError) as busy:
            sdk.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], max_tokens=100
            )
        assert busy.value.code == "rate_limit_exceeded"
        assert busy.value.response.headers["x-should-retry"] == "true"
        assert "reserved by requests in flight" in busy.value.message
        refusing = view(gw, "ml-tokens", "ml")
        assert (refusing["state"], refusing["refused_last_minute"]) == ("refusing", 1)
    # the client went away: the stream settles what it delivered, the room comes back
    after = view(gw, "ml-tokens", "ml")
    for _ in range(200):  # the gateway notices at its next write to the closed connection
        if after["reserved"] == 0:
            break
        time.sleep(0.05)
        after = view(gw, "ml-tokens", "ml")
    assert 0 < after["spent"] < TOKENS
    assert after["state"] == "refusing"  # it did refuse, within the last minute

    blocks = admin(gw, "/admin/blocks").json()
    [group] = [g for g in blocks["data"] if g["name"] == "ml-tokens"]
    assert (group["blocked"], group["retryable"], group["overruns"]) == (1, 1, 0)


def test_an_overrun_is_counted_at_once(gw: GatewayHarness, tmp_path: Path) -> None:
    secret = gw.create_key(name="states-web", team="web", user="bo")
    context = "The quarterly numbers, line by line. " * 1_500  # ~10k tokens, stored upstream
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as sdk:
        first = sdk.responses.create(model="gpt-4o-mini", input=context, max_output_tokens=50)
        # (the simulator counts input as characters / 4, above what OpenAI's tokenizer
        # counts for this text, so even this one may be charged above its reservation)
        before = view(gw, "web-soft", "web")["overruns"]
        follow = sdk.responses.with_raw_response.create(
            model="gpt-4o-mini",
            previous_response_id=first.id,
            input="And the total?",
            max_output_tokens=50,
        )
    assert follow.headers["x-spendgate-input-bounded"] == (
        "previous_response_id: estimated, the body counted as all the input "
        "(hidden_input: estimate)"
    )
    row = gw.ledger(gw.last_key_id)[-1]
    assert row.input_tokens > 10_000  # billed for the stored context it did not reserve
    assert row.settled_above == ("web-soft",)
    shown = view(gw, "web-soft", "web")
    assert (shown["overruns"], shown["state"]) == (before + 1, "ok")
    [group] = [g for g in admin(gw, "/admin/blocks").json()["data"] if g["name"] == "web-soft"]
    overrun = [r for r in gw.ledger(gw.last_key_id) if r.settled_above]
    assert (group["blocked"], group["overruns"], group["overrun_cost_nanos"]) == (
        0,
        before + 1,
        sum(r.cost_nanos for r in overrun),
    )

    config = write_config(tmp_path, gw.sim.url, db_path=gw.db_path, configure=configure)
    table = CliRunner().invoke(cli, ["budgets", "-c", str(config)])
    assert table.exit_code == 0, table.output
    header, *lines = table.output.splitlines()
    assert header.split()[7:9] == ["STATE", "OVER"]
    web = next(line for line in lines if line.startswith("web-soft "))
    assert web.split()[7:9] == ["ok", str(before + 1)]
    blocks = CliRunner().invoke(cli, ["blocks", "-c", str(config)])
    assert blocks.exit_code == 0, blocks.output
    assert f"{before + 1} request(s) charged more than they had reserved" in blocks.output


def states(gw: GatewayHarness, tmp_path: Path, name: str, member: str) -> tuple[str, str, str]:
    """The budget member's state as the admin API, ``spendgate budgets --json`` and the
    ``spendgate budgets`` table show it."""
    api = view(gw, name, member)["state"]
    config = write_config(tmp_path, gw.sim.url, db_path=gw.db_path, configure=configure)
    shown = CliRunner().invoke(cli, ["budgets", "-c", str(config), "--json"])
    assert shown.exit_code == 0, shown.output
    [as_json] = [v for v in json.loads(shown.output) if (v["name"], v["member"]) == (name, member)]
    table = CliRunner().invoke(cli, ["budgets", "-c", str(config), "--name", name])
    assert table.exit_code == 0, table.output
    [state] = [row["STATE"] for row in table_rows(table.output) if row["MEMBER"] == member]
    return api, as_json["state"], state


def table_rows(output: str) -> list[dict[str, str]]:
    """The ``spendgate budgets`` table's budget, member and state cells: a left-aligned
    column starts where its title starts and ends where the next one's title starts."""
    header, *lines = output.splitlines()
    starts = {title: header.index(title) for title in header.split()}
    out = []
    for line in lines:
        out.append(
            {
                "BUDGET": line[: starts["MEMBER"]].strip(),
                "MEMBER": line[starts["MEMBER"] : starts["PERIOD"]].strip(),
                "STATE": line[starts["STATE"] :].split()[0],
            }
        )
    return out


def ask(sdk: openai.OpenAI, max_tokens: int, content: str = "A small request.") -> Any:
    """A chat completion's raw response (headers and body); raises a refusal."""
    return sdk.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": content}],
        max_tokens=max_tokens,
        extra_headers={"x-sim-output-tokens": "75"},
    )


def test_a_budget_driven_to_its_cap_reads_exhausted_everywhere(
    gw: GatewayHarness, tmp_path: Path
) -> None:
    secret = gw.create_key(name="states-cam", user="cam")
    big = "Every figure of the quarter, line by line. " * 300  # input alone > the limit
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as sdk:
        first = ask(sdk, 100)
        assert first.headers["x-spendgate-budget"] == "cam-usd"
        assert first.headers["x-spendgate-budget-state"] == "ok"
        shown = view(gw, "cam-usd", "cam")
        assert (shown["minimal_request"], shown["state"]) == (MINIMAL, "ok")
        assert shown["remaining"] > 3 * MINIMAL

        # a request it cannot afford, though what is left affords a minimal one: the last
        # word this budget had was "over budget", so it reads exhausted
        with pytest.raises(openai.RateLimitError) as refused:
            ask(sdk, 100, big)
        assert refused.value.code == "insufficient_quota"
        told = refused.value.response.headers
        assert (told["x-spendgate-budget"], told["x-spendgate-budget-state"]) == (
            "cam-usd",
            "exhausted",
        )
        assert told["x-should-retry"] == "false"
        assert view(gw, "cam-usd", "cam")["remaining"] >= MINIMAL
        assert states(gw, tmp_path, "cam-usd", "cam") == ("exhausted",) * 3

        # a request it admits answers that refusal: refusing (it refused within a minute)
        assert ask(sdk, 100).headers["x-spendgate-budget-state"] in ("ok", "held")
        assert states(gw, tmp_path, "cam-usd", "cam") == ("refusing",) * 3

        # to its cap: small requests until one is refused
        for _ in range(20):
            try:
                ask(sdk, 100)
            except openai.RateLimitError as exc:
                last = exc
                break
        else:
            pytest.fail("the budget never refused")
    assert last.code == "insufficient_quota"
    assert last.response.headers["x-spendgate-budget-state"] == "exhausted"
    shown = view(gw, "cam-usd", "cam")
    assert shown["reserved"] == 0
    assert 0 < shown["remaining"] < USD_LIMIT // 4  # money is left, not enough to be useful
    assert states(gw, tmp_path, "cam-usd", "cam") == ("exhausted",) * 3
    # the ledger: every refusal is uncharged and names the budget
    refusals = gw.ledger(gw.last_key_id, blocked=True)
    assert [r.blocked_by for r in refusals] == ["cam-usd", "cam-usd"]


def test_exhausted_once_what_is_left_cannot_afford_a_minimal_request(
    gw: GatewayHarness, tmp_path: Path
) -> None:
    """No refusal needed: a token budget with fewer than 1 + min_output_tokens (101) left
    is exhausted, whatever a reset or a refusal did before."""
    secret = gw.create_key(name="states-ml", team="ml", user="ada")
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as sdk:
        sdk.chat.completions.create(
            model="gpt-4o-mini",
            messages=SMALL,
            max_tokens=100,
            extra_headers={"x-sim-output-tokens": "50"},
        )
        spent = view(gw, "ml-tokens", "ml")["spent"]
        prompt = spent - 50  # the same prompt again: the same input tokens
        out = TOKENS - spent - prompt - 60  # leaves 60 tokens: fewer than 101
        second = sdk.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=SMALL,
            max_tokens=out,
            extra_headers={"x-sim-output-tokens": str(out)},
        )
        assert second.headers["x-spendgate-budget"] == "ml-tokens"
        shown = view(gw, "ml-tokens", "ml")
        assert (shown["remaining"], shown["minimal_request"]) == (60, 101)
        assert shown["refused_last_minute"] == 0
        assert states(gw, tmp_path, "ml-tokens", "ml") == ("exhausted",) * 3
        with pytest.raises(openai.RateLimitError) as refused:
            sdk.chat.completions.create(model="gpt-4o-mini", messages=SMALL, max_tokens=100)
        assert refused.value.response.headers["x-spendgate-budget-state"] == "exhausted"
    # a reset gives it its room back: ok, the refusal before it forgotten
    assert admin_post(gw, "/admin/budgets/ml-tokens/reset").status == 200
    assert states(gw, tmp_path, "ml-tokens", "ml") == ("ok",) * 3


def admin_post(gw: GatewayHarness, path: str) -> HttpResult:
    return http_request("POST", gw.url + path, body={}, token=ADMIN)
