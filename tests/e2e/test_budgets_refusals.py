"""Budget refusals through the real SDKs, with their DEFAULT retry settings.

An exhausted budget must stop a client after ONE request (``x-should-retry: false``; both
SDKs retry a plain 429 twice), and say why: the scope, the member, the budget's name, its
limit, what is spent and reserved, and when it resets. OpenAI dialect: 429
``insufficient_quota`` (``openai.RateLimitError``); Anthropic dialect: 402 ``billing_error``
(``anthropic.PaymentRequiredError``), never 400 (CLIENTS.md §0 facts 7, 8, 11, 12).

Also here: per-request caps (413; 402 billing_error in the Anthropic dialect; naming the
cap; a dollar cap clamps the output ceiling when a smaller one fits), soft budgets (never
refuse; their state shows in ``overview()``) and the budget headers on successful responses.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.services.budgets import BudgetView

OPENAI_MODEL = "gpt-4o-mini"  # $0.15 / $0.60 per 1M tokens
ANTHROPIC_MODEL = "claude-haiku-4-5"  # $1 / $5 per 1M tokens
PROMPT = [{"role": "user", "content": "Say hello to the budget tests."}]
MAX_TOKENS = 100
FAST = {"x-sim-output-tokens": "75"}
SLOW = {"x-sim-output-tokens": "75", "x-sim-delay-ms": "800"}

BUDGETS: list[dict[str, Any]] = [
    # one request fits (~46k of ~66k worst case), the second cannot while a third is in flight
    {"name": "oai-user", "scope": "user", "match": "u-oai", "limit_usd": "0.00015"},
    # Claude: ~0.4M actual, ~0.55M worst case
    {"name": "ant-user", "scope": "user", "match": "u-ant", "limit_usd": "0.0012"},
    {
        "name": "soft-watch",
        "scope": "user",
        "match": "u-soft",
        "limit_usd": "0.0001",
        "hard": False,
        "soft_thresholds": ["0.4"],
    },
    {"name": "hdr-user", "scope": "user", "match": "u-hdr", "limit_usd": "1.00"},
    {"name": "hdr-service", "scope": "service", "match": "hdr-svc", "limit_usd": "5.00"},
]
CAPS: list[dict[str, Any]] = [
    {"scope": "user", "match": "u-big", "max_input_tokens": 50},
    {"scope": "user", "match": "u-agent", "max_input_tokens": 1000},
    {"scope": "user", "match": "u-dear", "max_request_usd": "0.0003"},
    {"scope": "user", "match": "u-tiny", "max_request_usd": "0.0001"},
]


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [{**spec, "period": "daily"} for spec in BUDGETS]
    data["request_caps"] = CAPS
    data["budget_settings"] = {"timezone": "UTC", "min_output_tokens": 256}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("refusals") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


class Counter:
    """An httpx event hook counting the requests a client sent."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, request: httpx2.Request) -> None:
        self.count += 1


@pytest.fixture
def clients(gw: GatewayHarness) -> Iterator[Callable[[str, str], tuple[Any, Counter]]]:
    """SDK clients with their default max_retries and a request counter each."""
    made: list[Any] = []

    def make(kind: str, secret: str) -> tuple[Any, Counter]:
        counter = Counter()
        client = gw.sdk_client(kind, secret, {"request": [counter]})
        assert client.max_retries == 2
        made.append(client)
        return client, counter

    try:
        yield make
    finally:
        for client in made:
            client.close()


def views(gw: GatewayHarness, name: str) -> list[BudgetView]:
    return gw.call(gw.gateway.budget_service.overview(name))


def one_view(gw: GatewayHarness, name: str) -> BudgetView:
    (view,) = views(gw, name)
    return view


def eventually(probe: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.01)


def send(kind: str, client: Any, headers: dict[str, str], **extra: Any) -> Any:
    if kind == "anthropic":
        return client.messages.create(
            model=ANTHROPIC_MODEL,
            messages=PROMPT,
            max_tokens=MAX_TOKENS,
            extra_headers=headers,
            **extra,
        )
    return client.chat.completions.create(
        model=OPENAI_MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=headers, **extra
    )


def worst_nanos(
    gw: GatewayHarness, model: str, body: dict[str, Any], ceiling: int, *, bound: bool = False
) -> int:
    """What the gateway reserves for ``body`` at ``ceiling`` (its own worst-case pricing):
    with its input counted, or by its byte bound (``bound``: what a request holds while in
    flight where its budgets have room to spare, docs/budgets.md)."""
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    counter = tokens.count_anthropic_input if "claude" in model else tokens.count_chat_input
    with counting_with(BYTE_BOUND) if bound else contextlib.nullcontext():
        count = counter(model, body)
    cache = "claude" not in model  # Anthropic writes its cache only where a body asks
    worst = worst_case(
        route.price,
        input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
        input_exact=count.exact,
        ceiling=ceiling,
        choices=1,
        cache_write=cache,
        cache_write_1h=cache,
    )
    return worst.amount(Unit.NANOS, ceiling)


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_exhausted_budget_refuses_once_and_names_everything(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]], kind: str
) -> None:
    user, budget = ("u-ant", "ant-user") if kind == "anthropic" else ("u-oai", "oai-user")
    secret = gw.create_key(name=f"refused-{kind}", user=user)
    client, counter = clients(kind, secret)

    send(kind, client, FAST)  # admitted and settled: something is spent
    assert counter.count == 1
    # a second request held in flight by a slow upstream: something is reserved
    slow_client, _ = clients(kind, secret)
    slow_result: list[Any] = []
    slow = threading.Thread(target=lambda: slow_result.append(send(kind, slow_client, SLOW)))
    slow.start()
    try:
        assert eventually(lambda: one_view(gw, budget).state.reserved > 0)
        state = one_view(gw, budget).state
        assert state.spent > 0

        for stream in (False, True):
            counter.count = 0
            error: Any
            if kind == "anthropic":
                with pytest.raises(anthropic.PaymentRequiredError) as caught:
                    send(kind, client, FAST, stream=stream)
                error = caught.value
                assert error.status_code == 402
                assert error.body["type"] == "error"
                assert error.body["error"]["type"] == "billing_error"
                message = error.body["error"]["message"]
            else:
                with pytest.raises(openai.RateLimitError) as caught:
                    send(kind, client, FAST, stream=stream)
                error = caught.value
                assert error.status_code == 429
                assert error.code == "insufficient_quota"
                assert error.type == "insufficient_quota"
                message = error.body["message"]
            assert counter.count == 1, f"{counter.count} requests for one refusal"
            # The budget had room but for the request in flight: this one waited for it to
            # settle (what it gives back might have been enough), then found it spent.
            slow.join(5)
            assert slow_result, "the request in flight failed"
            state = one_view(gw, budget).state  # as the refusal saw it: nothing reserved
            assert state.reserved == 0
            assert error.response.headers["x-should-retry"] == "false"
            assert f"user '{user}'" in message  # scope and member
            assert f"({budget}, daily)" in message  # the budget's name and period
            assert Unit.NANOS.render(state.limit) in message
            assert Unit.NANOS.render(state.spent) + " spent" in message
            assert Unit.NANOS.render(state.reserved) + " reserved" in message
            resets = state.ref.window.resets_at
            assert resets is not None
            assert f"It resets at {resets.isoformat()}" in message
    finally:
        slow.join(10)
    assert slow_result, "the in-flight request failed"
    view = one_view(gw, budget)
    assert view.state.reserved == 0
    assert len(gw.ledger(gw.last_key_id)) == 2  # the two requests that went upstream
    assert view.state.spent == sum(row.cost_nanos for row in gw.ledger(gw.last_key_id))
    # Every refusal is recorded, uncharged, with the budget that stopped it and its price.
    blocks = gw.ledger(gw.last_key_id, blocked=True)
    assert blocks
    assert {row.blocked_by for row in blocks} == {budget}
    assert all(row.cost_nanos == 0 and row.would_cost_nanos > 0 for row in blocks)


# --------------------------------------------------------------------------- request caps


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_max_input_tokens_cap_refuses_with_413_or_402(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]], kind: str
) -> None:
    """OpenAI dialect: 413 request_cap_exceeded. Anthropic dialect: 402 billing_error, the
    one shape Claude Code shows our message for (on a 413 it prints its own "Request too
    large (max 32MB)" text; docs/errors.md, Agents)."""
    secret = gw.create_key(name=f"big-{kind}", user="u-big")
    client, counter = clients(kind, secret)
    before = len(gw.sim.records)
    big = [{"role": "user", "content": "tell me more about budgets " * 40}]
    error_type = anthropic.APIStatusError if kind == "anthropic" else openai.APIStatusError
    create = client.messages.create if kind == "anthropic" else client.chat.completions.create
    model = ANTHROPIC_MODEL if kind == "anthropic" else OPENAI_MODEL
    with pytest.raises(error_type) as caught:
        create(model=model, messages=big, max_tokens=50)
    error: Any = caught.value
    if kind == "anthropic":
        assert error.status_code == 402
        assert error.body["error"]["type"] == "billing_error"
    else:
        assert error.status_code == 413
    assert counter.count == 1
    assert error.response.headers["x-should-retry"] == "false"
    text = str(error.body)
    assert "over the limit of 50 per request for user 'u-big'" in text
    if kind == "openai":
        assert error.code == "request_cap_exceeded"
    assert len(gw.sim.records) == before  # never sent upstream
    # a small prompt passes the same cap
    send(kind, client, FAST)
    assert counter.count == 2


def test_anthropic_defined_tools_count_against_an_input_cap(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]]
) -> None:
    """A short prompt with Anthropic's bash and text editor tools is billed at least
    346 + 245 + 700 input tokens (the tool-use system prompt and the two tools' own
    definitions), though the body names the tools in a few tokens: a cap of 1,000 input
    tokens refuses it before the upstream; the same prompt with a custom tool passes."""
    secret = gw.create_key(name="agent-tools", user="u-agent")
    client, counter = clients("anthropic", secret)
    before = len(gw.sim.records)
    defined = [
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
    ]
    with pytest.raises(anthropic.APIStatusError) as caught:
        send("anthropic", client, FAST, tools=defined)
    error: Any = caught.value
    assert error.status_code == 402
    assert "over the limit of 1,000 per request for user 'u-agent'" in str(error.body)
    assert counter.count == 1
    assert len(gw.sim.records) == before  # never sent upstream
    custom = [{"name": "list_files", "input_schema": {"type": "object"}}]
    send("anthropic", client, FAST, tools=custom)


CODEX = {"originator": "codex_exec", "user-agent": "codex_exec/0.169.0 (Linux; x86_64)"}


def test_codex_gets_a_refusal_it_cannot_retry_as_400(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]]
) -> None:
    """Codex retries 401/402/403/413/429 five times whatever x-should-retry says and
    rewrites 429 insufficient_quota into its own words; it stops at once on a 400 and
    prints the message. So requests from Codex (its originator header) get non-retryable
    refusals as 400, same body; everyone else keeps the status (docs/errors.md, Agents)."""
    secret = gw.create_key(name="codex-big", user="u-big")
    key_id = gw.last_key_id
    client, counter = clients("openai", secret)
    big = "tell me more about budgets " * 40
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=OPENAI_MODEL, input=big, extra_headers=CODEX)
    error: Any = caught.value
    assert error.code == "request_cap_exceeded"
    assert error.response.headers["x-should-retry"] == "false"
    assert "over the limit of 50 per request for user 'u-big'" in error.message
    with pytest.raises(openai.APIStatusError) as caught:
        client.responses.create(model=OPENAI_MODEL, input=big)  # not Codex: 413
    assert caught.value.status_code == 413
    assert counter.count == 2
    assert [row.status for row in gw.ledger(key_id, blocked=True)] == [400, 413]
    # a bad key: Codex retried a 401 six times
    bad, _ = clients("openai", "sk-sg-not-a-key")
    with pytest.raises(openai.BadRequestError) as caught:
        bad.responses.create(model=OPENAI_MODEL, input="hi", extra_headers=CODEX)
    assert caught.value.code == "invalid_api_key"
    # Claude Code's dialect is not touched by an originator header
    ant, _ = clients("anthropic", secret)
    with pytest.raises(anthropic.APIStatusError) as caught_ant:
        ant.messages.create(
            model=ANTHROPIC_MODEL,
            max_tokens=50,
            messages=[{"role": "user", "content": big}],
            extra_headers=CODEX,
        )
    assert caught_ant.value.status_code == 402


def test_max_request_usd_cap_clamps_when_a_smaller_ceiling_fits(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]]
) -> None:
    secret = gw.create_key(name="dear", user="u-dear")
    client, counter = clients("openai", secret)
    body = {"model": OPENAI_MODEL, "messages": PROMPT, "max_tokens": 1000}
    # the largest ceiling whose worst case fits the $0.0003 cap
    cap = 300_000
    fits = max(k for k in range(256, 1000) if worst_nanos(gw, OPENAI_MODEL, body, k) <= cap)
    raw = client.chat.completions.with_raw_response.create(
        model=OPENAI_MODEL, messages=PROMPT, max_tokens=1000, extra_headers=FAST
    )
    assert raw.parse().usage.completion_tokens == 75
    assert counter.count == 1
    assert raw.headers["x-spendgate-output-clamped"] == f"{fits} (requested 1000)"
    record = gw.sim.records[-1]
    assert record.body["max_tokens"] == fits
    (row,) = gw.ledger(gw.last_key_id)
    assert row.output_ceiling == fits
    assert row.clamped_from == 1000


def test_max_request_usd_cap_refuses_when_even_the_minimum_is_too_dear(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]]
) -> None:
    secret = gw.create_key(name="tiny", user="u-tiny")
    client, counter = clients("openai", secret)
    before = len(gw.sim.records)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model=OPENAI_MODEL, messages=PROMPT, max_tokens=1000)
    error = caught.value
    assert error.status_code == 413
    assert error.code == "request_cap_exceeded"
    assert counter.count == 1
    assert "over the per-request limit of $0.000100 for user 'u-tiny'" in error.message
    assert len(gw.sim.records) == before
    assert gw.ledger(gw.last_key_id) == []
    (block,) = gw.ledger(gw.last_key_id, blocked=True)
    assert block.blocked_by == "request-cap:user:u-tiny"
    assert block.status == 413
    assert block.cost_nanos == 0
    assert block.would_cost_nanos > 100_000  # more than the $0.0001 cap


# --------------------------------------------------------------------------- soft budgets


def test_soft_budget_never_refuses_but_shows_its_state(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]]
) -> None:
    secret = gw.create_key(name="soft", user="u-soft")
    client, counter = clients("openai", secret)
    states = []
    for _ in range(4):  # ~46k each against a soft limit of 100k
        raw = client.chat.completions.with_raw_response.create(
            model=OPENAI_MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=FAST
        )
        raw.parse()
        # a soft budget is never the "tightest": no budget headers, no clamping
        assert "x-spendgate-budget" not in raw.headers
        assert "x-spendgate-output-clamped" not in raw.headers
        view = one_view(gw, "soft-watch")
        assert view.state.reserved == 0
        states.append((view.state.spent, view.state.state, view.to_json()["state"]))
    assert counter.count == 4
    spent = [s[0] for s in states]
    assert spent[-1] > 100_000  # past the limit, and never refused
    assert [s[1] for s in states] == ["soft", "soft", "exhausted", "exhausted"], states
    assert all(s[1] == s[2] for s in states)
    rows = gw.ledger(gw.last_key_id)
    assert all(row.clamped_from is None and row.output_ceiling == MAX_TOKENS for row in rows)


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_successful_responses_carry_the_tightest_budget(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Counter]], kind: str
) -> None:
    secret = gw.create_key(name=f"hdr-{kind}", user="u-hdr", service="hdr-svc")
    client, _ = clients(kind, secret)
    spent_before = one_view(gw, "hdr-user").state.spent  # the other dialect's run, if any
    model = ANTHROPIC_MODEL if kind == "anthropic" else OPENAI_MODEL
    body = {"model": model, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    worst = worst_nanos(gw, model, body, MAX_TOKENS, bound=True)  # held in flight
    if kind == "anthropic":
        raw = client.messages.with_raw_response.create(
            model=model, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=FAST
        )
    else:
        raw = client.chat.completions.with_raw_response.create(
            model=model, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=FAST
        )
    raw.parse()
    headers = raw.headers
    assert headers["x-spendgate-budget"] == "hdr-user"  # less room than hdr-service
    left = 1_000_000_000 - spent_before - worst
    assert headers["x-spendgate-budget-remaining"] == f"{left / 1e9:.6f} USD"
    view = one_view(gw, "hdr-user")
    assert view.state.ref.window.resets_at is not None
    reset = datetime.fromisoformat(headers["x-spendgate-budget-reset"])
    assert reset == view.state.ref.window.resets_at
    assert "x-spendgate-output-clamped" not in headers
