"""500 concurrent requests against a budget worth about ten: the limit holds exactly.

Every request asks for ``MAX_TOKENS`` output tokens and the simulator generates exactly
``OUTPUT_TOKENS`` (``x-sim-output-tokens``), so each admitted request costs the same known
amount; ``budget_settings.min_output_tokens`` equals ``MAX_TOKENS``, so nothing is clamped:
a request is either admitted at its full worst case or refused. (``OUTPUT_TOKENS`` stays
below ``MAX_TOKENS`` because the simulator's "one word, one token" text is ~1.3 o200k
tokens a word: at ``MAX_TOKENS`` words the streaming guard, which counts o200k, would end
the well-behaved stream as if the upstream had overrun its ceiling.) The real ``openai`` SDK
(``AsyncOpenAI``, ``max_retries=0``) fires all 500 at once with ``asyncio.gather``, a mix
of streaming (with and without ``include_usage``) and non-streaming requests.

What must hold afterwards: the ledger's total for the key is at most the limit (overshoot
exactly 0); the number admitted lies between ``floor(limit / worst case)`` (what fits if
nothing settles before the last admission) and ``floor(limit / actual cost)`` (what fits
once every reservation has shrunk to its actual cost); every refusal is a 429 naming the
tightest budget: ``insufficient_quota`` (not retryable) once the spent amount leaves no
room, ``rate_limit_exceeded`` (retryable) for a request that found the room held by
requests in flight and could not wait in line for it; and with nothing in flight
``overview()`` shows reserved 0 and
spent equal to the ledger's total.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.ledger import LedgerRow
from spendgate.pipeline.worst_case import input_upper_bound

MODEL = "gpt-4o-mini"
MAX_TOKENS = 100
OUTPUT_TOKENS = 75  # at most 99 o200k tokens of simulator text, whatever the prompt
REQUESTS = 500
PROMPT = [{"role": "user", "content": "Count from one to ten, slowly."}]
SIM = {"x-sim-output-tokens": str(OUTPUT_TOKENS)}


@contextmanager
def gateway(tmp_path: Path, budgets: list[dict[str, Any]]) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = budgets
        data["budget_settings"] = {"min_output_tokens": MAX_TOKENS}

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


@dataclass
class Outcome:
    admitted: int = 0
    refusals: list[openai.APIStatusError] = field(default_factory=list)
    other: list[BaseException] = field(default_factory=list)


async def one_request(client: openai.AsyncOpenAI, index: int) -> None:
    kind = index % 3
    if kind == 0:
        completion = await client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=SIM
        )
        assert completion.usage is not None
        assert completion.usage.completion_tokens == OUTPUT_TOKENS
        return
    options: dict[str, Any] = {"stream_options": {"include_usage": True}} if kind == 1 else {}
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=PROMPT,
        max_tokens=MAX_TOKENS,
        stream=True,
        extra_headers=SIM,
        **options,
    )
    finish, usage = None, None
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
        usage = chunk.usage or usage
    assert finish == "stop"
    if kind == 1:
        assert usage is not None
        assert usage.completion_tokens == OUTPUT_TOKENS
    else:
        assert usage is None  # the usage chunk spendgate asked for is not passed on


async def fire(gw: GatewayHarness, secret: str, count: int = REQUESTS) -> Outcome:
    outcome = Outcome()
    client = openai.AsyncOpenAI(
        api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=60
    )
    async with client:
        results = await asyncio.gather(
            *(one_request(client, i) for i in range(count)), return_exceptions=True
        )
    for result in results:
        if result is None:
            outcome.admitted += 1
        elif isinstance(result, openai.APIStatusError) and result.status_code in (429, 402):
            outcome.refusals.append(result)
        else:
            outcome.other.append(result)
    return outcome


def worst_amounts(gw: GatewayHarness, unit: Unit) -> tuple[int, int]:
    """The smallest and largest worst case the gateway reserves for one of these requests
    (streaming bodies differ from plain ones only in fields that carry no tokens)."""
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    assert route.price is not None
    amounts = []
    for extra in (
        {},
        {"stream": True},
        {"stream": True, "stream_options": {"include_usage": True}},
    ):
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": MAX_TOKENS, **extra}
        count = tokens.count_chat_input(MODEL, body)
        worst = worst_case(
            route.price,
            input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
            input_exact=count.exact,
            ceiling=MAX_TOKENS,
            choices=1,
        )
        amounts.append(worst.amount(unit, MAX_TOKENS))
    return min(amounts), max(amounts)


def charged(row: LedgerRow, unit: Unit) -> int:
    if unit is Unit.TOKENS:
        return row.input_tokens + row.output_tokens
    return row.cost_nanos


def check_run(
    gw: GatewayHarness,
    outcome: Outcome,
    key_id: str,
    *,
    unit: Unit,
    limit: int,
    tightest: str,
    others: tuple[str, ...] = (),
) -> dict[str, int]:
    assert not outcome.other, outcome.other[:3]
    assert outcome.admitted + len(outcome.refusals) == REQUESTS

    rows = gw.ledger(key_id)
    assert len(rows) == outcome.admitted  # a refused request leaves no row
    for row in rows:
        assert row.status == 200
        assert row.error is None
        assert row.output_tokens == OUTPUT_TOKENS
        assert row.usage_estimated is False
        assert row.output_ceiling == MAX_TOKENS
        assert row.clamped_from is None
        assert not row.unreconciled
    total = sum(charged(row, unit) for row in rows)
    assert total <= limit, f"overshoot: {total} > {limit}"

    low_worst, high_worst = worst_amounts(gw, unit)
    actual = min(charged(row, unit) for row in rows)
    assert actual <= low_worst
    assert limit // high_worst <= outcome.admitted <= limit // actual, (
        outcome.admitted,
        limit,
        high_worst,
        actual,
    )

    exhausted = 0
    for refusal in outcome.refusals:
        assert isinstance(refusal, openai.RateLimitError)
        assert refusal.status_code == 429
        assert f"({tightest}, daily)" in refusal.message, refusal.message
        for other in others:
            assert f"({other}," not in refusal.message
        if refusal.code == "insufficient_quota":  # really spent: do not retry
            assert refusal.type == "insufficient_quota"
            assert refusal.response.headers["x-should-retry"] == "false"
            exhausted += 1
        else:  # room held by requests in flight (the line was full): retry later
            assert (refusal.code, refusal.type) == ("rate_limit_exceeded", "requests")
            assert refusal.response.headers["x-should-retry"] == "true"
            assert int(refusal.response.headers["retry-after"]) >= 1
            assert "reserved by requests in flight" in refusal.message
    assert exhausted > 0  # the burst ends on a spent budget

    views = gw.call(gw.gateway.budget_service.overview())
    assert views, "no budget counters"
    for view in views:
        assert view.state.reserved == 0, view.to_json()
        assert view.state.spent == total, view.to_json()
    return {
        "admitted": outcome.admitted,
        "refused": len(outcome.refusals),
        "charged": total,
        "limit": limit,
        "worst": high_worst,
        "actual": actual,
    }


def report(what: str, numbers: dict[str, int]) -> None:
    print(
        f"\n{what}: {numbers['admitted']} admitted, {numbers['refused']} refused; "
        f"charged {numbers['charged']} of {numbers['limit']} "
        f"(overshoot {max(0, numbers['charged'] - numbers['limit'])}); "
        f"worst case {numbers['worst']}, actual {numbers['actual']} per request"
    )


# About ten requests: each costs ~46,500 nano-dollars, its worst case ~66,000.
LIMIT_USD = "0.00064"
LIMIT_NANOS = 640_000


async def test_500_concurrent_requests_one_dollar_budget(tmp_path: Path) -> None:
    budgets = [{"name": "per-key", "scope": "key", "limit_usd": LIMIT_USD, "period": "daily"}]
    with gateway(tmp_path, budgets) as gw:
        secret = gw.create_key(name="burst", team="ml")
        outcome = await fire(gw, secret)
        numbers = check_run(
            gw, outcome, gw.last_key_id, unit=Unit.NANOS, limit=LIMIT_NANOS, tightest="per-key"
        )
    report("one $ budget", numbers)
    assert 8 <= LIMIT_NANOS // numbers["worst"] <= 10  # "about ten requests"


NESTED = ("key-budget", "service-budget", "team-budget")


def nested_budgets(tightest: str) -> list[dict[str, Any]]:
    """Key within service within team; ``tightest`` gets the ~10-request limit, the other
    two more (1.5x and 2x), so each run is blocked by a different one."""
    looser = iter(("0.00096", "0.00128"))
    limits = {name: LIMIT_USD if name == tightest else next(looser) for name in NESTED}
    return [
        {"name": "key-budget", "scope": "key", "limit_usd": limits["key-budget"]},
        {
            "name": "service-budget",
            "scope": "service",
            "match": "batch",
            "limit_usd": limits["service-budget"],
        },
        {"name": "team-budget", "scope": "team", "match": "ml", "limit_usd": limits["team-budget"]},
    ]


@pytest.mark.parametrize("tightest", NESTED)
async def test_500_concurrent_requests_nested_budgets(tmp_path: Path, tightest: str) -> None:
    budgets = [{**spec, "period": "daily"} for spec in nested_budgets(tightest)]
    with gateway(tmp_path, budgets) as gw:
        secret = gw.create_key(name="nested", team="ml", service="batch", user="ana")
        outcome = await fire(gw, secret)
        numbers = check_run(
            gw,
            outcome,
            gw.last_key_id,
            unit=Unit.NANOS,
            limit=LIMIT_NANOS,
            tightest=tightest,
            others=tuple(name for name in NESTED if name != tightest),
        )
        views = gw.call(gw.gateway.budget_service.overview())
        assert sorted(view.budget.name for view in views) == sorted(NESTED)
        members = {view.budget.name: view.member for view in views}
        assert members == {
            "key-budget": gw.last_key_id,
            "service-budget": "batch",
            "team-budget": "ml",
        }
        # the tightest has the least room left; the others were never the blocker
        rooms = {view.budget.name: view.state.room for view in views}
        assert all(rooms[tightest] < room for name, room in rooms.items() if name != tightest)
    report(f"nested, {tightest} tightest", numbers)
    assert 8 <= LIMIT_NANOS // numbers["worst"] <= 10  # "about ten requests"


async def test_500_concurrent_requests_token_budget(tmp_path: Path) -> None:
    # each request: ~15 input + 75 output tokens actual, ~150 reserved
    limit = 1_200
    budgets = [
        {"name": "tokens", "scope": "user", "match": "bo", "limit_tokens": limit, "period": "daily"}
    ]
    with gateway(tmp_path, budgets) as gw:
        secret = gw.create_key(name="tok", team="web", user="bo")
        outcome = await fire(gw, secret)
        numbers = check_run(
            gw, outcome, gw.last_key_id, unit=Unit.TOKENS, limit=limit, tightest="tokens"
        )
    report("token budget", numbers)
    assert 6 <= limit // numbers["worst"] <= 10
