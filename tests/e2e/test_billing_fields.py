"""One reading of every field that decides money, usage that is vetted before it is
believed, and cache-write rates only where the body asks for them (issue 10).

Real gateway and simulator on loopback, real SDKs, a HARD budget on every request:

* a body whose money fields the gateway and a provider could read differently is refused
  with 400 in the caller's dialect, sent once, and never reaches the provider;
* on an ``openai-compatible`` provider the ceiling spendgate reserved for is in every
  output field the provider may honour (the simulator's ``x-sim-compat`` servers);
* a usage object that cannot be right (``x-sim-usage``) is flagged in the ledger, charged
  at most the reservation, and locks nobody out;
* a Claude request is reserved at the plain input rate without ``cache_control``, at the
  5-minute write rate with it, and at the 1-hour rate only with ``ttl: "1h"``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.simulator.records import RequestRecord

MINI = "gpt-4o-mini"  # $0.15 / $0.60 per million: 150 / 600 nano-dollars a token
HAIKU = "claude-haiku-4-5"  # $1 input, $1.25 5-minute write, $2 1-hour write, $5 output
HAIKU_IN, HAIKU_WRITE_5M, HAIKU_WRITE_1H, HAIKU_OUT = 1_000, 1_250, 2_000, 5_000
PROMPT = [{"role": "user", "content": "Say hello to the billing tests."}]


@contextmanager
def gateway(
    tmp_path: Path,
    budgets: list[dict[str, Any]],
    extra: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = budgets
        data["budget_settings"] = {"min_output_tokens": 256}
        if extra is not None:
            extra(data)

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


def records_of(gw: GatewayHarness) -> dict[str, RequestRecord]:
    assert gw.call(gw.sim.wait_idle(10))
    return {record.request_id: record for record in list(gw.sim.records)}


class Counter:
    """An httpx event hook counting the requests a client sent (its retries included)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _request: object) -> None:
        self.count += 1


# ------------------------------------------------------------- one reading of money fields

REFUSED_BODIES = [
    pytest.param(
        "chat",
        {"max_completion_tokens": 16, "max_tokens": 8000},
        "max_completion_tokens",
        id="chat-two-ceilings",
    ),
    pytest.param(
        "chat",
        {"max_completion_tokens": 0, "max_tokens": 20000},
        "max_completion_tokens",
        id="chat-ceiling-0",
    ),
    pytest.param("chat", {"max_tokens": 100, "stream": "true"}, "stream", id="chat-stream-str"),
    pytest.param("chat", {"max_tokens": 100, "stream": 1}, "stream", id="chat-stream-1"),
    pytest.param(
        "responses", {"max_output_tokens": 100, "background": True}, "background", id="background"
    ),
    pytest.param(
        "responses", {"max_output_tokens": 0}, "max_output_tokens", id="responses-ceiling-0"
    ),
    pytest.param(
        "responses", {"max_output_tokens": 100, "stream": "true"}, "stream", id="responses-stream"
    ),
    pytest.param("messages", {"max_tokens": 100, "stream": "true"}, "stream", id="messages-stream"),
    pytest.param("messages", {"max_tokens": 0}, "max_tokens", id="messages-ceiling-0"),
]


@pytest.fixture(scope="module")
def fields_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    budgets = [{"name": "per-key", "scope": "key", "limit_usd": "1"}]
    with gateway(tmp_path_factory.mktemp("fields"), budgets) as harness:
        yield harness


@pytest.mark.parametrize(("surface", "fields", "param"), REFUSED_BODIES)
def test_money_fields_read_two_ways_are_refused_before_upstream(
    fields_gw: GatewayHarness, surface: str, fields: dict[str, Any], param: str
) -> None:
    gw = fields_gw
    secret = gw.create_key(name=f"fields-{surface}")
    counter = Counter()
    before = len(gw.sim.records)
    if surface == "messages":
        with (
            gw.sdk_client("anthropic", secret, {"request": [counter]}) as client,
            pytest.raises(anthropic.BadRequestError) as caught,
        ):
            client.messages.create(model=HAIKU, messages=PROMPT, max_tokens=100, extra_body=fields)
        body = caught.value.body
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
        assert f"'{param}'" in body["error"]["message"]
    else:
        with gw.sdk_client("openai", secret, {"request": [counter]}) as client:
            create: Callable[..., Any] = (
                functools.partial(client.chat.completions.create, messages=PROMPT)
                if surface == "chat"
                else functools.partial(client.responses.create, input="Hello.")
            )
            with pytest.raises(openai.BadRequestError) as caught:
                create(model=MINI, extra_body=fields)
        error = caught.value
        assert error.type == "invalid_request_error"
        assert error.param == param
        assert f"'{param}'" in error.message
    assert caught.value.status_code == 400
    assert counter.count == 1  # default retries, yet sent once
    assert len(gw.sim.records) == before  # the provider never saw it
    assert gw.ledger(gw.last_key_id) == []


COMPAT_LIMIT = "0.001"  # at $0.60 per million output tokens: about 1,650 tokens
COMPAT_LIMIT_NANOS = 1_000_000
COMPAT_ASKED = 5_000


def compat_provider(data: dict[str, Any]) -> None:
    """An OpenAI-compatible server (vLLM, Ollama, a hosted clone) with gpt-4o-mini's price."""
    data["providers"]["compat"] = {
        "kind": "openai-compatible",
        "base_url": data["providers"]["openai"]["base_url"],
        "api_key_env": "SIM_OPENAI_KEY",
    }
    data["models"]["local-mini"] = {"provider": "compat", "upstream_model": MINI}


@pytest.fixture(scope="module")
def compat_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    budgets = [
        {"name": "compat-tight", "scope": "user", "limit_usd": COMPAT_LIMIT},  # each user
        {"name": "compat-roomy", "scope": "service", "match": "roomy", "limit_usd": "1"},
    ]
    with gateway(tmp_path_factory.mktemp("compat"), budgets, compat_provider) as harness:
        yield harness


@pytest.mark.parametrize("server", ["max-tokens-only", "max-completion-or-max"])
@pytest.mark.parametrize(
    "fields",
    [
        {"max_completion_tokens": COMPAT_ASKED},
        {"max_tokens": COMPAT_ASKED},
        {"max_completion_tokens": COMPAT_ASKED, "max_tokens": COMPAT_ASKED},
    ],
    ids=["max_completion_tokens", "max_tokens", "both"],
)
def test_compat_clamp_is_written_to_every_output_field(
    compat_gw: GatewayHarness, server: str, fields: dict[str, int]
) -> None:
    gw = compat_gw
    secret = gw.create_key(name="compat", user=f"u-{server}-{'-'.join(fields)}")
    headers = {"x-sim-compat": server, "x-sim-output-tokens": "3000"}
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="local-mini", messages=PROMPT, extra_headers=headers, **fields
        )
    clamped = raw.headers["x-spendgate-output-clamped"]
    ceiling = int(clamped.split()[0])
    assert clamped == f"{ceiling} (requested {COMPAT_ASKED})"
    assert 256 <= ceiling < 3000
    (row,) = gw.ledger(gw.last_key_id)
    record = records_of(gw)[row.upstream_request_id or ""]
    # every field the provider may honour holds the reserved ceiling, max_tokens included
    for name in (*fields, "max_tokens"):
        assert record.body[name] == ceiling, (name, record.body)
    assert record.output_tokens == ceiling  # the provider stopped there
    assert row.output_tokens == record.output_tokens
    assert row.input_tokens == record.input_tokens
    assert not row.usage_estimated, row.usage_problem
    assert row.cost_nanos == record.input_tokens * 150 + record.output_tokens * 600
    assert row.cost_nanos <= COMPAT_LIMIT_NANOS


def test_compat_unclamped_ceiling_reaches_the_field_the_provider_honours(
    compat_gw: GatewayHarness,
) -> None:
    """Not clamped: the request's own ``max_completion_tokens: 300`` is what was reserved.
    A compatible server that reads only ``max_tokens`` must get 300 there too, or it writes
    (and bills) far more than the reservation and the ledger no longer equals the bill."""
    gw = compat_gw
    secret = gw.create_key(name="compat-unclamped", service="roomy")
    headers = {"x-sim-compat": "max-tokens-only", "x-sim-output-tokens": "3000"}
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="local-mini", messages=PROMPT, max_completion_tokens=300, extra_headers=headers
        )
    assert "x-spendgate-output-clamped" not in raw.headers
    (row,) = gw.ledger(gw.last_key_id)
    record = records_of(gw)[row.upstream_request_id or ""]
    assert record.body.get("max_tokens") == 300, record.body
    assert record.output_tokens <= 300
    assert row.output_tokens == record.output_tokens


# ------------------------------------------------------------------------ usage anomalies

ANOMALY_MAX = 100
ANOMALY_LIMIT = "0.01"  # dozens of requests: one anomaly must not use it up
MODES = ["missing", "empty", "negative", "string", "float", "huge", "null"]
ANOMALIES = [(MINI, mode) for mode in MODES] + [
    (HAIKU, mode) for mode in ("missing", "empty", "negative", "string", "float", "huge")
]


@pytest.fixture(scope="module")
def anomaly_gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    budgets = [{"name": "anomaly", "scope": "key", "limit_usd": ANOMALY_LIMIT}]
    with gateway(tmp_path_factory.mktemp("anomaly"), budgets) as harness:
        yield harness


def reservation(gw: GatewayHarness, model: str, body: dict[str, Any]) -> int:
    """What the gateway reserves for ``body`` (no cache writes: neither body asks)."""
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    anthropic_like = model == HAIKU
    count = (tokens.count_anthropic_input if anthropic_like else tokens.count_chat_input)(
        model, body
    )
    worst = worst_case(
        route.price,
        input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
        input_exact=count.exact,
        ceiling=ANOMALY_MAX,
        choices=1,
        cache_write=not anthropic_like,
        cache_write_1h=not anthropic_like,
    )
    return worst.amount(Unit.NANOS, ANOMALY_MAX)


def send(gw: GatewayHarness, secret: str, model: str, stream: bool, headers: dict[str, str]) -> Any:
    body: dict[str, Any] = {"model": model, "messages": PROMPT, "max_tokens": ANOMALY_MAX}
    if model == HAIKU:
        with gw.sdk_client("anthropic", secret, max_retries=0) as client:
            if stream:  # raw events: the SDK's helper chokes on such usage itself
                events = client.messages.create(**body, stream=True, extra_headers=headers)
                assert [event.type for event in events][-1] == "message_stop"
            else:
                assert client.messages.create(**body, extra_headers=headers).content
    else:
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            if stream:
                chunks = list(
                    client.chat.completions.create(**body, stream=True, extra_headers=headers)
                )
                assert chunks[-1].choices[0].finish_reason == "stop"
            else:
                assert client.chat.completions.create(**body, extra_headers=headers).choices
    return body


@pytest.mark.parametrize("stream", [False, True], ids=["body", "stream"])
@pytest.mark.parametrize(("model", "mode"), ANOMALIES)
def test_usage_that_cannot_be_right_is_flagged_and_capped(
    anomaly_gw: GatewayHarness, model: str, mode: str, stream: bool
) -> None:
    gw = anomaly_gw
    secret = gw.create_key(name=f"anomaly-{mode}")
    key_id = gw.last_key_id
    headers = {"x-sim-usage": mode, "x-sim-output-tokens": "60"}
    body = send(gw, secret, model, stream, headers)
    (row,) = gw.ledger(key_id)
    assert row.usage_estimated
    assert row.usage_problem, row
    assert 0 < row.cost_nanos <= reservation(gw, model, body)
    assert row.output_tokens <= ANOMALY_MAX
    assert row.input_tokens < 10_000
    record = records_of(gw)[row.upstream_request_id or ""]
    assert record.outcome == "ok"
    assert record.output_tokens == 60  # the simulator's truth, whatever it reported

    # Nobody is locked out: the next, well-behaved request is admitted and believed.
    send(gw, secret, model, stream, {"x-sim-output-tokens": "60"})
    first, second = sorted(gw.ledger(key_id), key=lambda r: r.ts)
    assert first == row
    assert second.status == 200
    assert second.usage_problem is None
    assert not second.usage_estimated
    assert gw.ledger(key_id, blocked=True) == []
    views = gw.call(gw.gateway.budget_service.overview("anomaly"))
    (view,) = [view for view in views if view.member == key_id]
    assert view.state.reserved == 0
    assert view.state.spent == row.cost_nanos + second.cost_nanos


# ------------------------------------------------------------------------------ cache rates

CACHE_CEILING = 4_000
SYSTEM = "You review code for correctness, clarity and cost. " * 160
CACHE_MARKS: dict[str, dict[str, str] | None] = {
    "plain": None,
    "5m": {"type": "ephemeral"},
    "1h": {"type": "ephemeral", "ttl": "1h"},
}
WRITE_RATE = {"plain": HAIKU_IN, "5m": HAIKU_WRITE_5M, "1h": HAIKU_WRITE_1H}
SIM_WRITES = {
    "plain": {},
    "5m": {"x-sim-cache-write-tokens": "1000"},
    "1h": {"x-sim-cache-write-1h-tokens": "1000"},
}


def cache_body(kind: str) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "text", "text": SYSTEM}
    mark = CACHE_MARKS[kind]
    if mark is not None:
        block["cache_control"] = mark
    return {
        "model": HAIKU,
        "max_tokens": CACHE_CEILING,
        "system": [block],
        "messages": [{"role": "user", "content": "Review the diff."}],
    }


@pytest.mark.parametrize("kind", list(CACHE_MARKS))
def test_cache_write_rate_only_where_the_body_asks(tmp_path: Path, kind: str) -> None:
    """The budget is set to exactly the request's worst case at the PLAIN input rate: a
    body without ``cache_control`` is admitted whole; one that may write the cache is
    clamped to what is left after its input at the 5-minute or the 1-hour write rate."""
    budgets = [{"name": "cache", "scope": "user", "match": "u-cache", "limit_usd": "1"}]
    with gateway(tmp_path, budgets) as gw:
        body = cache_body(kind)
        count = tokens.count_anthropic_input(HAIKU, body)
        input_tokens = input_upper_bound(count.tokens, 200_000)
        limit = input_tokens * HAIKU_IN + CACHE_CEILING * HAIKU_OUT
        gw.call(gw.gateway.budget_service.set_limit("cache", str(Decimal(limit) / 10**9), None))
        secret = gw.create_key(name=f"cache-{kind}", user="u-cache")
        headers = {"x-sim-output-tokens": "80", **SIM_WRITES[kind]}
        with gw.sdk_client("anthropic", secret, max_retries=0) as client:
            raw = client.messages.with_raw_response.create(**body, extra_headers=headers)
        assert raw.parse().usage.output_tokens == 80
        expected = (limit - input_tokens * WRITE_RATE[kind]) // HAIKU_OUT
        (row,) = gw.ledger(gw.last_key_id)
        record = records_of(gw)[row.upstream_request_id or ""]
        if kind == "plain":
            assert expected == CACHE_CEILING
            assert "x-spendgate-output-clamped" not in raw.headers
            assert row.clamped_from is None
        else:
            assert 256 <= expected < CACHE_CEILING
            assert raw.headers["x-spendgate-output-clamped"] == (
                f"{expected} (requested {CACHE_CEILING})"
            )
            assert row.clamped_from == CACHE_CEILING
        assert row.output_ceiling == expected
        assert record.body["max_tokens"] == expected
        # settled at the rates of what the provider billed: writes at their own TTL's rate
        written = record.cache_write_input_tokens
        assert row.cache_write_tokens == written == (0 if kind == "plain" else 1000)
        assert row.input_tokens == record.input_tokens
        assert row.cost_nanos == (
            (record.input_tokens - written) * HAIKU_IN
            + written * WRITE_RATE[kind]
            + record.output_tokens * HAIKU_OUT
        )
        assert row.cost_nanos <= limit
