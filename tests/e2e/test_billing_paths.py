"""Caps that hold on every way a provider bills (issue 10): input the body does not show,
server tools billed per call, service tiers.

Each test runs the real gateway and the simulator on loopback, drives them with the real
``openai`` / ``anthropic`` SDKs under a HARD budget, and checks the ledger against what the
simulator says it billed (its `RequestRecord`: stored context, tool results and searches,
the tier it reported), priced independently from the catalog's list prices written out
here. Concurrency is threads with the sync SDKs; outcomes depend on counts only: the
admission line's wait bound (``admission_wait_s``) is far above anything these bursts
need, so a request is either admitted or refused because the money is really gone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import anthropic
import httpx2
import openai
import pytest

from harness import SIM_SECRET_OPENAI, GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.simulator.records import RequestRecord

T = TypeVar("T")

# List prices (catalog), in nano-dollars per token: $1 per million tokens = 1,000.
MINI = "gpt-4o-mini"  # $0.15 / $0.60; priority $0.25 / $1.00; window 128,000
MINI_IN, MINI_OUT, MINI_WINDOW = 150, 600, 128_000
HAIKU = "claude-haiku-4-5"  # $1 / $5; web search $10 per 1,000; window 200,000
HAIKU_IN, HAIKU_OUT, HAIKU_WINDOW, SEARCH_FEE = 1_000, 5_000, 200_000, 10_000_000
O4 = "o4-mini"  # $1.10 / $4.40; priority $2.00 / $8.00; flex 0.5x
O4_RATES = {None: (1_100, 4_400), "priority": (2_000, 8_000), "flex": (550, 2_200)}

GENEROUS_WAIT = {"admission_wait_s": 30}  # never reached: settlements come in milliseconds


@contextmanager
def gateway(
    tmp_path: Path,
    budgets: list[dict[str, Any]],
    settings: dict[str, Any] | None = None,
    extra: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = budgets
        data["budget_settings"] = {**GENEROUS_WAIT, **(settings or {})}
        if extra is not None:
            extra(data)

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


def concurrently(count: int, work: Callable[[int], T]) -> list[T | BaseException]:
    """``work(0..count-1)`` in ``count`` threads released together; results or errors."""
    barrier = threading.Barrier(count)

    def run(index: int) -> T:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(run, index) for index in range(count)]
        results: list[T | BaseException] = []
        for future in futures:
            try:
                results.append(future.result(timeout=120))
            except Exception as error:
                results.append(error)
    return results


def sim_records(gw: GatewayHarness) -> dict[str, RequestRecord]:
    """The simulator's records by the request id it answered with (the ledger's
    ``upstream_request_id``), once every answer is written."""
    assert gw.call(gw.sim.wait_idle(10))
    return {record.request_id: record for record in list(gw.sim.records)}


def billed(record: RequestRecord) -> Usage:
    """What the simulator billed, as a `Usage` (for `cost_of`)."""
    tier = record.service_tier if record.service_tier not in (None, "default", "standard") else None
    calls = tuple(
        (tool, count)
        for tool, count in sorted(record.server_tool_uses.items())
        if tool in ("web_search", "web_fetch") and count
    )
    return Usage(
        input_tokens=record.input_tokens,
        output_tokens=record.output_tokens,
        cached_input_tokens=record.cached_input_tokens,
        cache_write_tokens=record.cache_write_input_tokens,
        service_tier=tier,
        tool_calls=calls,
    )


def check_rows_match_simulator(
    gw: GatewayHarness, rows: list[LedgerRow], expected_cost: Callable[[RequestRecord], int]
) -> dict[str, RequestRecord]:
    """Every row is what the simulator billed: tokens, tier, tool calls and cost (by the
    list prices of ``expected_cost`` and by `cost_of` at the catalog's price). Returns the
    rows' simulator records by upstream request id."""
    records = sim_records(gw)
    matched: dict[str, RequestRecord] = {}
    for row in rows:
        record = records[row.upstream_request_id or ""]
        matched[record.request_id] = record
        assert record.outcome == "ok", record.outcome
        assert row.status == 200, row
        assert not row.usage_estimated, row.usage_problem
        assert row.settled_above == (), row.settled_above
        assert row.input_tokens == record.input_tokens, (row.input_tokens, record.billed)
        assert row.output_tokens == record.output_tokens, (row.output_tokens, record.billed)
        assert row.cost_nanos == expected_cost(record), (row.cost_nanos, record.billed)
        route = gw.gateway.models.get(row.routed_model or row.requested_model)
        assert route is not None
        assert route.price is not None
        assert row.cost_nanos == cost_of(billed(record), route.price)
    return matched


def check_counters(gw: GatewayHarness, budget: str, rows: list[LedgerRow]) -> None:
    (view,) = gw.call(gw.gateway.budget_service.overview(budget))
    assert view.state.reserved == 0, view.to_json()
    assert view.state.spent == sum(row.cost_nanos for row in rows), view.to_json()


def check_exhausted_openai(error: BaseException, budget: str) -> None:
    assert isinstance(error, openai.RateLimitError), repr(error)
    assert error.code == "insufficient_quota", error.message
    assert error.response.headers["x-should-retry"] == "false"
    assert f"({budget}, monthly)" in error.message


def check_exhausted_anthropic(error: BaseException, budget: str) -> None:
    assert isinstance(error, anthropic.PaymentRequiredError), repr(error)
    assert error.body["error"]["type"] == "billing_error"
    assert error.response.headers["x-should-retry"] == "false"
    assert f"({budget}, monthly)" in error.body["error"]["message"]


# ------------------------------------------------------------ input the body does not show

CONTEXT_TOKENS = 100_000
CTX_LIMIT = 200_000_000  # $0.20: ~13 chained requests at their real cost, 10 at worst
CTX_BURST = 24
CTX_MAX_OUT = 100
CTX_SIM = {"x-sim-output-tokens": "50"}
CTX_BOUNDED = (
    f"previous_response_id: reserved as {MINI_WINDOW} input tokens "
    f"(1 x the {MINI_WINDOW}-token window)"
)


def sim_post(gw: GatewayHarness, path: str, body: dict[str, Any], **headers: str) -> Any:
    """Straight to the provider, as another application of the same account would."""
    with httpx2.Client() as http:
        answer = http.post(
            gw.sim.url + path,
            json=body,
            headers={"authorization": f"Bearer {SIM_SECRET_OPENAI}", **headers},
        )
    assert answer.status_code == 200, answer.text
    return answer.json()


def stored_context(gw: GatewayHarness) -> tuple[str, str]:
    """A stored response whose context is ~100k tokens, and the id of its output message."""
    stored = sim_post(
        gw,
        "/v1/responses",
        {"model": MINI, "input": "Read the whole repository."},
        **{"x-sim-cached-tokens": str(CONTEXT_TOKENS)},
    )
    assert stored["usage"]["input_tokens"] == CONTEXT_TOKENS
    message = next(item for item in stored["output"] if item["type"] == "message")
    return stored["id"], message["id"]


def mini_cost(record: RequestRecord) -> int:
    return (record.input_tokens - record.cached_input_tokens) * MINI_IN + (
        record.output_tokens * MINI_OUT
    )


def test_stored_context_burst_is_bounded_and_billed_whole(tmp_path: Path) -> None:
    budgets = [{"name": "ctx", "scope": "user", "match": "u-ctx", "limit_usd": "0.20"}]
    with gateway(tmp_path, budgets, {"min_output_tokens": CTX_MAX_OUT}) as gw:
        previous, _ = stored_context(gw)
        secret = gw.create_key(name="chain", user="u-ctx")
        key_id = gw.last_key_id

        def chained(index: int) -> Any:
            with gw.sdk_client("openai", secret, max_retries=0) as client:
                raw = client.responses.with_raw_response.create(
                    model=MINI,
                    input=f"Next step, number {index}.",
                    previous_response_id=previous,
                    max_output_tokens=CTX_MAX_OUT,
                    stream=bool(index % 2),
                    extra_headers=CTX_SIM,
                )
                if index % 2:
                    events = [event.type for event in raw.parse()]
                    assert events[-1] == "response.completed", events[-3:]
                else:
                    assert raw.parse().status == "completed"
                return raw.headers

        results = concurrently(CTX_BURST, chained)
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        for headers in admitted:
            assert headers["x-spendgate-input-bounded"] == CTX_BOUNDED
        for error in refused:
            check_exhausted_openai(error, "ctx")

        rows = gw.ledger(key_id)
        assert len(rows) == len(admitted)
        records = check_rows_match_simulator(gw, rows, mini_cost)
        for row in rows:  # the stored context is in the row, as the provider billed it
            record = records[row.upstream_request_id or ""]
            assert record.body["previous_response_id"] == previous
            assert record.context_input_tokens > CONTEXT_TOKENS
            assert row.input_tokens > CONTEXT_TOKENS
        chained_upstream = [
            r for r in sim_records(gw).values() if r.body and r.body.get("previous_response_id")
        ]
        assert len(chained_upstream) == len(admitted)  # refused ones never went upstream

        total = sum(row.cost_nanos for row in rows)
        assert total <= CTX_LIMIT, f"overshoot: {total} > {CTX_LIMIT}"
        worst = MINI_WINDOW * MINI_IN + CTX_MAX_OUT * MINI_OUT
        actual = min(row.cost_nanos for row in rows)
        assert CTX_LIMIT // worst <= len(admitted) <= CTX_LIMIT // actual
        assert CTX_BURST * actual > CTX_LIMIT  # so the burst must end on a spent budget
        assert refused
        assert CTX_LIMIT - total < worst  # refused only once the money is really gone
        blocks = gw.ledger(key_id, blocked=True)
        assert len(blocks) == len(refused)
        assert {row.blocked_by for row in blocks} == {"ctx"}
        check_counters(gw, "ctx", rows)


def conversation_with_context(gw: GatewayHarness) -> str:
    item = {"type": "message", "role": "user", "content": "notes " * 5_000}
    return str(sim_post(gw, "/v1/conversations", {"items": [item] * 4})["id"])


def test_conversation_and_item_reference_are_bounded_and_billed_whole(tmp_path: Path) -> None:
    budgets = [{"name": "one", "scope": "user", "match": "u-one", "limit_usd": "1"}]
    with gateway(tmp_path, budgets) as gw:
        _, message_id = stored_context(gw)
        conversation = conversation_with_context(gw)
        secret = gw.create_key(name="single", user="u-one")
        cases: list[tuple[dict[str, Any], str]] = [
            ({"conversation": conversation, "input": "Summarise the notes."}, "conversation"),
            (
                {
                    "input": [
                        {"type": "item_reference", "id": message_id},
                        {"role": "user", "content": "Go on from there."},
                    ]
                },
                "input[0]: item_reference",
            ),
        ]
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            for fields, reason in cases:
                raw = client.responses.with_raw_response.create(
                    model=MINI, max_output_tokens=200, extra_headers=CTX_SIM, **fields
                )
                assert raw.parse().status == "completed"
                assert raw.headers["x-spendgate-input-bounded"] == (
                    f"{reason}: reserved as {MINI_WINDOW} input tokens "
                    f"(1 x the {MINI_WINDOW}-token window)"
                )
        rows = gw.ledger(gw.last_key_id)
        assert len(rows) == 2
        records = check_rows_match_simulator(gw, rows, mini_cost)
        hidden = sorted(records[row.upstream_request_id or ""].context_input_tokens for row in rows)
        assert hidden[0] > 0  # the referenced message
        assert hidden[1] > 20_000  # the conversation's four items
        check_counters(gw, "one", rows)


def test_hidden_input_refuse_budget_refuses_before_any_upstream_call(tmp_path: Path) -> None:
    budgets = [
        {
            "name": "no-hidden",
            "scope": "user",
            "match": "u-strict",
            "limit_usd": "5",
            "hidden_input": "refuse",
        }
    ]
    with gateway(tmp_path, budgets) as gw:
        previous, message_id = stored_context(gw)
        conversation = conversation_with_context(gw)
        secret = gw.create_key(name="strict", user="u-strict")
        cases: list[dict[str, Any]] = [
            {"previous_response_id": previous, "input": "Next."},
            {"conversation": conversation, "input": "Next."},
            {"input": [{"type": "item_reference", "id": message_id}]},
        ]
        sent = [0]
        hooks = {"request": [lambda _request: sent.__setitem__(0, sent[0] + 1)]}
        with gw.sdk_client("openai", secret, hooks) as client:  # default retries
            for fields in cases:
                before, sent[0] = len(gw.sim.records), 0
                with pytest.raises(openai.APIStatusError) as caught:
                    client.responses.create(model=MINI, max_output_tokens=100, **fields)
                error = caught.value
                assert error.status_code == 413
                assert error.code == "request_cap_exceeded"
                assert error.response.headers["x-should-retry"] == "false"
                assert "no-hidden" in error.message
                assert "hidden_input: refuse" in error.message
                assert sent[0] == 1  # not retried
                assert len(gw.sim.records) == before  # nothing reached the provider
        assert gw.ledger(gw.last_key_id) == []
        blocks = gw.ledger(gw.last_key_id, blocked=True)
        assert [row.blocked_by for row in blocks] == ["hidden-input:no-hidden"] * 3
        assert all(row.cost_nanos == 0 for row in blocks)


# ------------------------------------------------------------------ server tools, per search

SEARCH_LIMIT = 1_500_000_000  # $1.50: room for one worst case at a time
SEARCH_BURST = 16
SEARCHES, MAX_USES, RESULT_TOKENS = 2, 3, 5_000
SEARCH_MAX_TOKENS = 500
SEARCH_SIM = {
    "x-sim-server-tool-uses": str(SEARCHES),
    "x-sim-tool-result-tokens": str(RESULT_TOKENS),  # each of a search's 5 results
    "x-sim-output-tokens": "40",
}
SEARCH_TOOL = {"type": "web_search_20250305", "name": "web_search", "max_uses": MAX_USES}
SEARCH_PASSES = 1 + MAX_USES
SEARCH_BOUNDED = (
    f"server tools web_search (up to {MAX_USES} calls): reserved as "
    f"{SEARCH_PASSES * HAIKU_WINDOW} input tokens ({SEARCH_PASSES} x the "
    f"{HAIKU_WINDOW}-token window)"
)


def haiku_cost(record: RequestRecord) -> int:
    searches = record.server_tool_uses.get("web_search", 0)
    return record.input_tokens * HAIKU_IN + record.output_tokens * HAIKU_OUT + searches * SEARCH_FEE


def test_web_search_burst_charges_searches_and_holds_the_cap(tmp_path: Path) -> None:
    budgets = [{"name": "search", "scope": "user", "match": "u-search", "limit_usd": "1.50"}]
    with gateway(tmp_path, budgets) as gw:
        secret = gw.create_key(name="searcher", user="u-search")
        key_id = gw.last_key_id

        def search(index: int) -> Any:
            with gw.sdk_client("anthropic", secret, max_retries=0) as client:
                raw = client.messages.with_raw_response.create(
                    model=HAIKU,
                    max_tokens=SEARCH_MAX_TOKENS,
                    messages=[{"role": "user", "content": f"Find the news, topic {index}."}],
                    tools=[SEARCH_TOOL],
                    stream=bool(index % 2),
                    extra_headers=SEARCH_SIM,
                )
                if index % 2:
                    kinds = [event.type for event in raw.parse()]
                    assert kinds[-1] == "message_stop", kinds[-3:]
                else:
                    message = raw.parse()
                    assert message.usage.server_tool_use is not None
                    assert message.usage.server_tool_use.web_search_requests == SEARCHES
                return raw.headers

        results = concurrently(SEARCH_BURST, search)
        admitted = [r for r in results if not isinstance(r, BaseException)]
        refused = [r for r in results if isinstance(r, BaseException)]
        for headers in admitted:
            assert headers["x-spendgate-input-bounded"] == SEARCH_BOUNDED
        for error in refused:
            check_exhausted_anthropic(error, "search")

        rows = gw.ledger(key_id)
        assert len(rows) == len(admitted)
        records = check_rows_match_simulator(gw, rows, haiku_cost)
        for row in rows:
            record = records[row.upstream_request_id or ""]
            assert record.server_tool_uses == {"web_search": SEARCHES}
            assert record.tool_result_tokens == SEARCHES * 5 * RESULT_TOKENS
            assert row.tool_calls == (("web_search", SEARCHES),)

        total = sum(row.cost_nanos for row in rows)
        assert total <= SEARCH_LIMIT, f"overshoot: {total} > {SEARCH_LIMIT}"
        worst = (
            SEARCH_PASSES * HAIKU_WINDOW * HAIKU_IN
            + MAX_USES * SEARCH_FEE
            + SEARCH_MAX_TOKENS * HAIKU_OUT
        )
        actual = min(row.cost_nanos for row in rows)
        assert SEARCH_LIMIT // worst <= len(admitted) <= SEARCH_LIMIT // actual
        # Admission needs spent + (nearly) a worst case to fit: a spent budget ends the burst.
        assert (SEARCH_BURST - 1) * actual + worst > SEARCH_LIMIT
        assert refused
        least = worst - (SEARCH_MAX_TOKENS - 256) * HAIKU_OUT  # min_output_tokens: 256
        assert SEARCH_LIMIT - total < least  # refused only once the money is really gone
        check_counters(gw, "search", rows)


# ------------------------------------------------------------------------- service tiers

TIER_PROMPT = [{"role": "user", "content": "Plan the migration in three steps."}]
TIER_SIM = {"x-sim-output-tokens": "60"}


def o4_cost(record: RequestRecord) -> int:
    tier = record.service_tier if record.service_tier in O4_RATES else None
    rate_in, rate_out = O4_RATES[tier]
    return record.input_tokens * rate_in + record.output_tokens * rate_out


def tier_extra(data: dict[str, Any]) -> None:
    """A second account on the same provider whose requests run in Priority by default."""
    data["providers"]["openai-priority"] = {
        **data["providers"]["openai"],
        "default_service_tier": "priority",
    }
    data["models"]["o4-mini-priority"] = {"provider": "openai-priority", "upstream_model": O4}


@pytest.mark.parametrize(
    ("asked", "reported", "stream"),
    [
        ("priority", "priority", False),
        ("priority", "priority", True),
        ("flex", "flex", False),
        ("flex", "flex", True),
        ("default", "default", False),
        (None, "priority", False),  # the provider says Priority: the bill follows it
        (None, "flex", True),
    ],
)
def test_service_tier_charged_at_the_reported_tier(
    tmp_path: Path, asked: str | None, reported: str, stream: bool
) -> None:
    budgets = [{"name": "tiers", "scope": "key", "limit_usd": "1"}]
    with gateway(tmp_path, budgets) as gw:
        secret = gw.create_key(name="tiers")
        headers = dict(TIER_SIM)
        if asked is None:
            headers["x-sim-service-tier"] = reported
        fields: dict[str, Any] = {"service_tier": asked} if asked else {}
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            if stream:
                chunks = client.chat.completions.create(
                    model=O4,
                    messages=TIER_PROMPT,
                    max_completion_tokens=500,
                    stream=True,
                    extra_headers=headers,
                    **fields,
                )
                assert {chunk.service_tier for chunk in chunks} == {reported}
            else:
                answer = client.chat.completions.create(
                    model=O4,
                    messages=TIER_PROMPT,
                    max_completion_tokens=500,
                    extra_headers=headers,
                    **fields,
                )
                assert answer.service_tier == reported
        (row,) = gw.ledger(gw.last_key_id)
        expected_tier = None if reported == "default" else reported
        assert row.service_tier == expected_tier
        (record,) = check_rows_match_simulator(gw, [row], o4_cost).values()
        assert record.service_tier == reported
        rate_in, rate_out = O4_RATES[expected_tier]
        assert row.cost_nanos == row.input_tokens * rate_in + row.output_tokens * rate_out


@pytest.mark.parametrize("stream", [False, True])
def test_responses_priority_charged_at_the_priority_rate(tmp_path: Path, stream: bool) -> None:
    """The same on the Responses API: gpt-4o-mini's Priority tier has rates of its own."""
    budgets = [{"name": "tiers", "scope": "key", "limit_usd": "1"}]
    with gateway(tmp_path, budgets) as gw:
        secret = gw.create_key(name="mini-priority")
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            answer = client.responses.create(
                model=MINI,
                input="Plan the migration.",
                max_output_tokens=300,
                service_tier="priority",
                stream=stream,
                extra_headers=TIER_SIM,
            )
            if stream:
                final = [event for event in answer if event.type == "response.completed"]
                answer = final[0].response
        assert answer.service_tier == "priority"
        (row,) = gw.ledger(gw.last_key_id)
        check_rows_match_simulator(
            gw, [row], lambda r: r.input_tokens * 250 + r.output_tokens * 1_000
        )
        assert row.service_tier == "priority"


TIER_LIMIT = 60_000_000  # $0.06: a 10,000-token answer fits at $4.40/M, not at $8.00/M
TIER_CEILING = 10_000


@pytest.mark.parametrize(
    ("model", "asked", "dearest"),
    [
        (O4, "priority", "priority"),
        ("o4-mini-priority", None, "priority"),  # the account's default tier
        ("o4-mini-priority", "default", None),  # asked for the standard tier: standard
        (O4, None, None),
        (O4, "flex", "flex"),
    ],
)
def test_worst_case_reserves_the_dearest_tier(
    tmp_path: Path, model: str, asked: str | None, dearest: str | None
) -> None:
    budgets = [{"name": "tier-cap", "scope": "key", "limit_usd": "0.06"}]
    with gateway(tmp_path, budgets, {"min_output_tokens": 256}, tier_extra) as gw:
        secret = gw.create_key(name="tier-cap")
        fields: dict[str, Any] = {"service_tier": asked} if asked else {}
        body = {"model": model, "messages": TIER_PROMPT, "max_completion_tokens": TIER_CEILING}
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(
                **body, extra_headers=TIER_SIM, **fields
            )
        count = tokens.count_chat_input(O4, {**body, **fields})
        assert count.exact
        input_tokens = input_upper_bound(count.tokens, 200_000)
        rate_in, rate_out = O4_RATES[dearest]
        spare = TIER_LIMIT - input_tokens * rate_in
        assert spare > 0
        if spare // rate_out >= TIER_CEILING:  # standard and flex: admitted whole
            assert dearest != "priority"
            assert "x-spendgate-output-clamped" not in raw.headers
            sent = TIER_CEILING
        else:  # priority: clamped to what the budget affords at priority rates
            assert dearest == "priority"
            sent = spare // rate_out
            assert raw.headers["x-spendgate-output-clamped"] == (
                f"{sent} (requested {TIER_CEILING})"
            )
        (record,) = check_rows_match_simulator(gw, gw.ledger(gw.last_key_id), o4_cost).values()
        assert record.body["max_completion_tokens"] == sent
        (row,) = gw.ledger(gw.last_key_id)
        assert row.output_ceiling == sent
