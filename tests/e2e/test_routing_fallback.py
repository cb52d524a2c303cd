"""Fallbacks and balancing: a deployment that fails before the client saw a byte (HTTP 429,
5xx, a timeout, a broken or refused connection) hands the request to the model's next
deployment, then to its fallback models, each re-admitted at its own price; a stream that
has started is never retried (docs/routing.md, "Fallbacks and balancing").

The gateway forwards ``x-sim-*`` headers to every attempt, so failures are aimed at one
upstream model name with ``x-sim-fail-models``: the second deployment of ``gpt-4o`` is sent
upstream as ``gpt-4o-2024-08-06`` and answers while ``gpt-4o`` fails. Each test tags its
requests with ``x-test-id`` to find its own simulator records.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage

B_UPSTREAM = "gpt-4o-2024-08-06"
PROMPT = [{"role": "user", "content": "Which deployment answers?"}]
TIMEOUT_S = 2.0  # every test's upstream reads; a slow loaded CI must stay well inside it
TIGHT_NANOS = 500_000  # team platform: a gpt-4o-mini worst case fits, a gpt-4o one does not


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


_HUNG: list[socket.socket] = []  # kept open for the module: a port that never accepts


def hung_port() -> int:
    """A listening port whose accept queue is full: a connect to it times out."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port: int = server.getsockname()[1]
    _HUNG.append(server)
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        _HUNG.append(filler)
    time.sleep(0.2)
    return port


def configure(data: dict[str, Any]) -> None:
    data["server"]["upstream_timeout_s"] = TIMEOUT_S
    data["server"]["upstream_connect_timeout_s"] = 0.5
    providers = data["providers"]
    providers["openai-b"] = dict(providers["openai"])
    providers["anthropic-b"] = dict(providers["anthropic"])
    dead = f"http://127.0.0.1:{closed_port()}"
    providers["openai-dead"] = {**providers["openai"], "base_url": f"{dead}/v1"}
    hung = f"http://127.0.0.1:{hung_port()}/v1"
    providers["openai-hung"] = {**providers["openai"], "base_url": hung}
    models = data["models"]
    models["gpt-4o"] = {
        "deployments": [
            {"provider": "openai", "weight": 1},
            {"provider": "openai-b", "model": B_UPSTREAM, "weight": 0},  # only after A failed
        ],
        "fallbacks": ["gpt-4o-mini"],
    }
    models["gpt-4o-mini"] = {"provider": "openai", "fallbacks": ["gpt-4o"]}
    models["o4-mini"] = {
        "deployments": [{"provider": "openai-dead"}, {"provider": "openai", "weight": 0}]
    }
    models["hung-first"] = {
        "deployments": [
            {"provider": "openai-hung", "model": "gpt-4o-mini"},
            {"provider": "openai", "model": "gpt-4o-mini", "weight": 0},
        ],
        "price": {"input": "1", "output": "2"},
    }
    models["dead-second"] = {
        "deployments": [
            {"provider": "openai", "model": "gpt-4o-mini"},
            {"provider": "openai-dead", "model": "gpt-4o-mini", "weight": 0},
        ],
        "price": {"input": "1", "output": "2"},
    }
    models["claude-sonnet-4-6"] = {
        "deployments": [{"provider": "anthropic"}, {"provider": "anthropic-b", "weight": 0}],
        "fallbacks": ["claude-haiku-4-5"],
    }
    models["balanced"] = {
        "deployments": [
            {"provider": "openai", "model": "gpt-4o-mini", "weight": 3},
            {"provider": "openai-b", "model": "gpt-4o-mini", "weight": 1},
        ],
        "price": {"input": "1", "output": "2"},
    }
    data["budgets"] = [
        {"name": "acme-all", "scope": "org", "match": "acme", "limit_usd": "100"},
        {
            "name": "platform-tight",
            "scope": "team",
            "match": "platform",
            "limit_usd": str(TIGHT_NANOS / 1e9),
        },
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    db = tmp_path_factory.mktemp("fallback") / "spendgate.db"
    harness = GatewayHarness(db, configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()
        for sock in _HUNG:
            sock.close()


@pytest.fixture(autouse=True)
def nothing_stays_reserved(gw: GatewayHarness) -> Iterator[None]:
    yield
    views = gw.call(gw.gateway.budget_service.overview())
    assert views
    for view in views:
        assert view.state.reserved == 0, view.to_json()


def new_key(gw: GatewayHarness, team: str = "ml") -> tuple[str, str]:
    secret = gw.create_key(team=team)
    return secret, gw.last_key_id


def tagged(**headers: str) -> dict[str, str]:
    return {"x-test-id": uuid.uuid4().hex, "x-sim-output-tokens": "12", **headers}


def sim_models(gw: GatewayHarness, headers: dict[str, str]) -> list[str]:
    """The upstream models the simulator was asked for, in order, by requests so tagged."""
    tag = headers["x-test-id"]
    records = [r for r in gw.sim.records if r.headers.get("x-test-id") == tag]
    return [r.body["model"] for r in records if isinstance(r.body, dict)]


def chat(gw: GatewayHarness, secret: str, model: str, headers: dict[str, str]) -> Any:
    client = gw.sdk_client("openai", secret, max_retries=0)
    with client:
        return client.chat.completions.with_raw_response.create(
            model=model, messages=PROMPT, max_tokens=50, extra_headers=headers
        )


def rows_by_attempt(gw: GatewayHarness, key_id: str) -> list[LedgerRow]:
    return sorted(gw.ledger(key_id), key=lambda row: row.attempt)


def settled_rows(gw: GatewayHarness, key_id: str, count: int, timeout: float = 5.0) -> bool:
    """Wait (from the test thread) until the key has ``count`` ledger rows."""
    deadline = time.monotonic() + timeout
    while len(gw.ledger(key_id)) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return len(gw.ledger(key_id)) == count


def cost_at(gw: GatewayHarness, row: LedgerRow, model: str) -> int:
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    usage = Usage(input_tokens=row.input_tokens, output_tokens=row.output_tokens)
    return cost_of(usage, route.price)


# one failing deployment -----------------------------------------------------------------

FAILURES = [
    pytest.param({"x-sim-status": "429"}, 429, False, id="429"),
    pytest.param({"x-sim-status": "500"}, 500, False, id="500"),
    pytest.param({"x-sim-status": "503"}, 503, False, id="503"),
    pytest.param({"x-sim-delay-ms": str(int(TIMEOUT_S * 2500))}, 504, True, id="timeout"),
    pytest.param({"x-sim-die-after-chunks": "0"}, 502, True, id="broken-connection"),
]


@pytest.mark.parametrize(("fault", "status", "billed"), FAILURES)
def test_failed_deployment_hands_over_to_the_next(
    gw: GatewayHarness, fault: dict[str, str], status: int, billed: bool
) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": "gpt-4o", **fault})
    raw = chat(gw, secret, "gpt-4o", headers)
    completion = raw.parse()
    assert completion.model == B_UPSTREAM
    assert completion.usage.completion_tokens == 12
    assert sim_models(gw, headers) == ["gpt-4o", B_UPSTREAM]
    failed, answered = rows_by_attempt(gw, key_id)
    request_id = failed.request_id
    assert raw.headers["x-spendgate-request-id"] == f"{request_id}-1" == answered.request_id
    assert raw.headers["x-spendgate-model"] == "gpt-4o"
    assert raw.headers["x-spendgate-fallback-from"] == "gpt-4o"
    assert (failed.attempt, failed.status, failed.provider) == (0, status, "openai")
    assert failed.fallback_from is None
    assert failed.error
    if billed:  # no answer: the input estimate is charged, as without fallbacks
        assert failed.usage_estimated
        assert failed.cost_nanos > 0
    else:  # the provider bills nothing for an error answer
        assert (failed.cost_nanos, failed.output_tokens) == (0, 0)
    assert (answered.attempt, answered.status, answered.provider) == (1, 200, "openai-b")
    assert (answered.routed_model, answered.served_model) == ("gpt-4o", B_UPSTREAM)
    assert answered.fallback_from == "gpt-4o"
    assert answered.requested_model == "gpt-4o"
    assert answered.cost_nanos == cost_at(gw, answered, "gpt-4o") > 0
    spent = gw.call(gw.gateway.budget_service.overview("acme-all"))[0].state.spent
    assert spent >= failed.cost_nanos + answered.cost_nanos


def test_weight_zero_deployment_is_never_drawn_first(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    for _ in range(20):
        raw = chat(gw, secret, "gpt-4o", tagged())
        assert raw.headers.get("x-spendgate-fallback-from") is None
    rows = gw.ledger(key_id)
    assert {(row.provider, row.attempt, row.served_model) for row in rows} == {
        ("openai", 0, "gpt-4o")
    }


def test_refused_connection_moves_on_and_leaves_no_row(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged()
    raw = chat(gw, secret, "o4-mini", headers)
    assert raw.parse().model == "o4-mini"
    assert raw.headers["x-spendgate-fallback-from"] == "o4-mini"
    assert sim_models(gw, headers) == ["o4-mini"]
    (row,) = gw.ledger(key_id)  # the refused attempt never reached an upstream
    assert (row.attempt, row.provider, row.status) == (1, "openai", 200)
    assert row.request_id == raw.headers["x-spendgate-request-id"]
    assert row.request_id.endswith("-1")


# every deployment failing ---------------------------------------------------------------


def test_fallback_model_answers_when_every_deployment_failed(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": f"gpt-4o,{B_UPSTREAM}", "x-sim-status": "503"})
    raw = chat(gw, secret, "gpt-4o", headers)
    assert raw.parse().model == "gpt-4o-mini"
    assert raw.headers["x-spendgate-model"] == "gpt-4o-mini"
    assert raw.headers["x-spendgate-fallback-from"] == "gpt-4o"
    assert sim_models(gw, headers) == ["gpt-4o", B_UPSTREAM, "gpt-4o-mini"]
    rows = rows_by_attempt(gw, key_id)
    assert [(r.attempt, r.routed_model, r.status, r.cost_nanos == 0) for r in rows] == [
        (0, "gpt-4o", 503, True),
        (1, "gpt-4o", 503, True),
        (2, "gpt-4o-mini", 200, False),
    ]
    assert [r.fallback_from for r in rows] == [None, "gpt-4o", "gpt-4o"]
    base = rows[0].request_id
    assert [r.request_id for r in rows] == [base, f"{base}-1", f"{base}-2"]
    answered = rows[-1]
    assert raw.headers["x-spendgate-request-id"] == answered.request_id
    assert answered.baseline_model == "gpt-4o"
    assert answered.cost_nanos == cost_at(gw, answered, "gpt-4o-mini")
    assert answered.baseline_cost_nanos == cost_at(gw, answered, "gpt-4o")


def test_fallback_row_keeps_the_name_the_client_sent(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": f"gpt-4o,{B_UPSTREAM}", "x-sim-status": "503"})
    chat(gw, secret, "gpt-4o", headers)
    rows = rows_by_attempt(gw, key_id)
    assert [r.routed_model for r in rows] == ["gpt-4o", "gpt-4o", "gpt-4o-mini"]
    assert [r.requested_model for r in rows] == ["gpt-4o"] * 3


def test_every_attempt_failing_returns_the_last_upstream_error(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    fail_all = f"gpt-4o,{B_UPSTREAM},gpt-4o-mini"
    headers = tagged(**{"x-sim-fail-models": fail_all, "x-sim-status": "429"})
    with pytest.raises(openai.RateLimitError) as info:
        chat(gw, secret, "gpt-4o", headers)
    assert info.value.status_code == 429
    assert len(sim_models(gw, headers)) == 3
    rows = rows_by_attempt(gw, key_id)
    assert [(r.attempt, r.status, r.cost_nanos) for r in rows] == [
        (0, 429, 0),
        (1, 429, 0),
        (2, 429, 0),
    ]
    assert info.value.response.headers["x-spendgate-request-id"] == rows[-1].request_id


def test_streaming_request_falls_back_before_its_first_byte(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": "gpt-4o", "x-sim-status": "503"})
    client = gw.sdk_client("openai", secret, max_retries=0)
    with client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=PROMPT, max_tokens=50, stream=True, extra_headers=headers
        )
        chunks = list(raw.parse())
    assert raw.headers["x-spendgate-fallback-from"] == "gpt-4o"
    assert {chunk.model for chunk in chunks} == {B_UPSTREAM}
    assert chunks[-1].choices[0].finish_reason == "stop"
    failed, answered = rows_by_attempt(gw, key_id)
    assert (failed.status, failed.cost_nanos, answered.status) == (503, 0, 200)
    assert answered.streamed
    assert answered.output_tokens == 12


def test_anthropic_falls_back_to_its_fallback_model(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": "claude-sonnet-4-6", "x-sim-status": "529"})
    client = gw.sdk_client("anthropic", secret, max_retries=0)
    with client:
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-6", max_tokens=50, messages=PROMPT, extra_headers=headers
        )
    assert raw.parse().model == "claude-haiku-4-5"
    assert raw.headers["x-spendgate-model"] == "claude-haiku-4-5"
    assert raw.headers["x-spendgate-fallback-from"] == "claude-sonnet-4-6"
    rows = rows_by_attempt(gw, key_id)
    assert [(r.provider, r.status) for r in rows] == [
        ("anthropic", 529),
        ("anthropic-b", 529),
        ("anthropic", 200),
    ]


# the budget at the fallback's price -----------------------------------------------------


def test_fallback_the_budget_cannot_afford_returns_the_original_error(
    gw: GatewayHarness,
) -> None:
    secret, key_id = new_key(gw, team="platform")
    headers = tagged(**{"x-sim-fail-models": "gpt-4o-mini", "x-sim-status": "503"})
    with pytest.raises(openai.InternalServerError) as info:
        chat(gw, secret, "gpt-4o-mini", headers)
    assert info.value.status_code == 503  # the upstream's error, not the budget's refusal
    assert sim_models(gw, headers) == ["gpt-4o-mini"]  # gpt-4o was never sent
    (row,) = gw.ledger(key_id)
    assert (row.routed_model, row.status, row.cost_nanos, row.attempt) == ("gpt-4o-mini", 503, 0, 0)
    # The refused fallback is on record as a block of attempt 1, uncharged.
    (blocked,) = gw.ledger(key_id, blocked=True)
    assert (blocked.attempt, blocked.routed_model, blocked.fallback_from) == (
        1,
        "gpt-4o",
        "gpt-4o-mini",
    )
    assert (blocked.blocked_by, blocked.cost_nanos) == ("platform-tight", 0)
    assert blocked.would_cost_nanos > TIGHT_NANOS
    views = gw.call(gw.gateway.budget_service.overview("platform-tight"))
    assert [view.state.spent for view in views] == [0]
    # Nothing of the budget went to the failure: a plain request still fits.
    ok = chat(gw, secret, "gpt-4o-mini", tagged())
    assert ok.headers.get("x-spendgate-fallback-from") is None


# balancing ------------------------------------------------------------------------------


def test_weights_share_traffic(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    gw.gateway.rng.seed(20240501)

    async def fire() -> None:
        client = openai.AsyncOpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0)
        gate = asyncio.Semaphore(20)

        async def one() -> None:
            async with gate:
                await client.chat.completions.create(
                    model="balanced", messages=PROMPT, max_tokens=20
                )

        async with client:
            await asyncio.gather(*(one() for _ in range(200)))

    gw.run_async(fire)
    rows = gw.ledger(key_id)
    assert len(rows) == 200
    assert all(row.attempt == 0 for row in rows)
    shares = Counter(row.provider for row in rows)
    assert set(shares) == {"openai", "openai-b"}
    assert 125 <= shares["openai"] <= 175, shares  # weight 3 of 4: 150 expected


# no fallback once a stream has started --------------------------------------------------


def test_no_fallback_mid_stream(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": "gpt-4o", "x-sim-die-after-chunks": "3"})
    client = gw.sdk_client("openai", secret, max_retries=0)
    received = []
    with client:
        stream = client.chat.completions.create(
            model="gpt-4o", messages=PROMPT, max_tokens=50, stream=True, extra_headers=headers
        )
        with pytest.raises(openai.APIError):
            received.extend(stream)
    assert 0 < len(received) <= 3
    assert all(chunk.model == "gpt-4o" for chunk in received)
    assert settled_rows(gw, key_id, 1)
    assert sim_models(gw, headers) == ["gpt-4o"]  # never retried on deployment B
    (row,) = gw.ledger(key_id)
    assert (row.attempt, row.fallback_from, row.streamed) == (0, None, True)
    assert row.error is not None
    assert "mid-stream" in row.error
    assert row.usage_estimated  # what was generated before the cut is charged
    assert row.output_tokens > 0


def test_anthropic_stream_cut_is_not_retried(gw: GatewayHarness) -> None:
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": "claude-sonnet-4-6", "x-sim-die-after-chunks": "4"})
    client = gw.sdk_client("anthropic", secret, max_retries=0)
    events: list[Any] = []
    with client:
        stream = client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=50,
            messages=PROMPT,
            stream=True,
            extra_headers=headers,
        )
        with pytest.raises(anthropic.APIError):
            events.extend(stream)
    assert events
    assert events[0].type == "message_start"
    assert settled_rows(gw, key_id, 1)
    assert sim_models(gw, headers) == ["claude-sonnet-4-6"]
    (row,) = gw.ledger(key_id)
    assert (row.attempt, row.provider) == (0, "anthropic")
    assert row.error is not None
    assert "mid-stream" in row.error


def test_a_connect_timeout_never_reached_the_upstream(gw: GatewayHarness) -> None:
    """Nothing was sent: no row, no charge, and the next deployment answers."""
    secret, key_id = new_key(gw)
    raw = chat(gw, secret, "hung-first", tagged())
    assert raw.status_code == 200
    rows = rows_by_attempt(gw, key_id)
    assert [(r.attempt, r.provider, r.status) for r in rows] == [(1, "openai", 200)]
    assert raw.headers["x-spendgate-request-id"] == rows[0].request_id


def test_the_error_after_fallbacks_is_the_upstream_one_that_has_a_row(
    gw: GatewayHarness,
) -> None:
    """Deployment A answers 503, deployment B cannot be reached: the client gets A's 503,
    named by A's request id (B left no row)."""
    secret, key_id = new_key(gw)
    headers = tagged(**{"x-sim-fail-models": "gpt-4o-mini", "x-sim-status": "503"})
    with pytest.raises(openai.InternalServerError) as info:
        chat(gw, secret, "dead-second", headers)
    assert info.value.status_code == 503
    rows = rows_by_attempt(gw, key_id)
    assert [(r.attempt, r.status) for r in rows] == [(0, 503)]
    assert info.value.response.headers["x-spendgate-request-id"] == rows[0].request_id


def test_a_fallback_model_the_key_may_not_use_is_not_tried(gw: GatewayHarness) -> None:
    """gpt-4o-mini falls back to gpt-4o, but a key allowed only gpt-4o-mini never gets it."""
    secret = gw.create_key(team="ml", allowed_models=["gpt-4o-mini"])
    key_id = gw.last_key_id
    headers = tagged(**{"x-sim-fail-models": "gpt-4o-mini", "x-sim-status": "503"})
    with pytest.raises(openai.InternalServerError):
        chat(gw, secret, "gpt-4o-mini", headers)
    assert sim_models(gw, headers) == ["gpt-4o-mini"]
    assert [(r.routed_model, r.status) for r in gw.ledger(key_id)] == [("gpt-4o-mini", 503)]
