"""Runaway protection against the real SDKs and a failing fake upstream.

* Loops: with ``loop_max_repeats: 2`` the same key sending the same request a third time
  within the window is refused, non-retryably ("Loop detected"), so an SDK retrying a
  failing request stops after 3 requests. Different requests are not loops; volatile
  fields (stream, stream_options, metadata, user) do not make a request different.
* Circuit breaker per key and model (``breaker_failures: 3``, ``breaker_cooldown_s: 1``,
  a manual clock): 3 upstream 500s, then 503 ``circuit_open`` without reaching the
  upstream; after the cool-down one probe; a failed probe re-opens it, a good one closes it.
* Session caps keyed by Claude Code's ``x-claude-code-session-id`` (and Codex's
  ``session-id``, spendgate's own ``x-spendgate-session``): requests and dollars per session.
* SDK retries are recorded: ``x-stainless-retry-count`` lands in the ledger's ``retry_count``.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.domain.fingerprint import fingerprint
from spendgate.domain.ledger import LedgerRow
from spendgate.simulator.records import RequestRecord

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-6"
MAX_TOKENS = 100
FAIL = {"x-sim-status": "500"}


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


class Sent:
    """An httpx event hook counting the requests a client sent."""

    def __init__(self) -> None:
        self.count = 0
        self.retry_counts: list[str | None] = []

    def __call__(self, request: httpx2.Request) -> None:
        self.count += 1
        self.retry_counts.append(request.headers.get("x-stainless-retry-count"))


Make = Callable[..., tuple[Any, Sent]]


def client_factory(gw: GatewayHarness) -> tuple[Make, list[Any]]:
    made: list[Any] = []

    def make(kind: str, secret: str, **options: Any) -> tuple[Any, Sent]:
        sent = Sent()
        client = gw.sdk_client(kind, secret, {"request": [sent]}, **options)
        made.append(client)
        return client, sent

    return make, made


def records(gw: GatewayHarness, run: str) -> list[RequestRecord]:
    return [r for r in list(gw.sim.records) if r.headers.get("x-test-run") == run]


# ============================================================================= loops

SESSION_LIMITS: list[dict[str, Any]] = [
    {
        "name": "per-session",
        "scope": "session",
        "models": [ANTHROPIC_MODEL, OPENAI_MODEL],
        "requests": "3/minute",
    }
]
SESSION_BUDGETS: list[dict[str, Any]] = [
    {
        "name": "session-dollars",
        "scope": "session",
        "models": [SONNET],
        "limit_usd": "0.003",
        "period": "daily",
    }
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    """Loop detection on (2 repeats a minute), plus session caps. Every request on it that
    is not about loops has a prompt of its own."""

    def configure(data: dict[str, Any]) -> None:
        data["runaway"] = {"loop_max_repeats": 2, "loop_window_s": 60}
        data["limits"] = SESSION_LIMITS
        data["budgets"] = SESSION_BUDGETS

    harness = GatewayHarness(
        tmp_path_factory.mktemp("runaway") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture
def clients(gw: GatewayHarness) -> Iterator[Make]:
    make, made = client_factory(gw)
    try:
        yield make
    finally:
        for client in made:
            client.close()


def test_an_sdk_retrying_a_failing_request_is_stopped_as_a_loop(
    gw: GatewayHarness, clients: Make
) -> None:
    secret = gw.create_key(name="looping")
    key_id = gw.last_key_id
    client, sent = clients("openai", secret)
    assert client.max_retries == 2
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=prompt("Fix the failing test, again."),
            max_tokens=MAX_TOKENS,
            extra_headers={**FAIL, "x-test-run": "loop-retries"},
        )
    # 500, 500 (the SDK's retries), then the third send of the same request: a loop
    assert sent.count == 3, sent.count
    assert sent.retry_counts == ["0", "1", "2"]
    assert len(records(gw, "loop-retries")) == 2  # the loop never reached the upstream
    error = caught.value
    assert error.status_code == 429
    assert error.code == "loop_detected"
    assert error.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in error.response.headers
    assert error.message.startswith("Error code: 429 - Loop detected: ")
    assert "same request 3 times within 60 s" in error.message  # this send is the 3rd

    rows = gw.ledger(key_id)
    assert sorted((row.status, row.retry_count) for row in rows) == [(500, 0), (500, 1)]
    (block,) = gw.ledger(key_id, blocked=True)
    assert block.blocked_by == "loop-detection"
    assert block.status == 429
    assert block.retry_count == 2
    assert block.cost_nanos == 0
    assert block.would_cost_nanos > 0


def test_different_requests_are_not_loops(gw: GatewayHarness, clients: Make) -> None:
    secret = gw.create_key(name="busy")
    client, sent = clients("openai", secret, max_retries=0)

    def ask(text: str, model: str = OPENAI_MODEL, max_tokens: int = MAX_TOKENS) -> Any:
        return client.chat.completions.create(
            model=model, messages=prompt(text), max_tokens=max_tokens
        )

    for i in range(6):
        ask(f"step {i} of a long task")
    ask("step 0 of a long task")  # the second send of that one: still allowed
    ask("step 0 of a long task", model="gpt-4o")  # another model: another request
    ask("step 0 of a long task", max_tokens=50)  # another ceiling too
    with pytest.raises(openai.RateLimitError) as caught:
        ask("step 0 of a long task")
    assert caught.value.code == "loop_detected"
    assert sent.count == 10
    # per key: the same request from another key is its own count
    other, _ = clients("openai", gw.create_key(name="other"), max_retries=0)
    other.chat.completions.create(
        model=OPENAI_MODEL, messages=prompt("step 0 of a long task"), max_tokens=MAX_TOKENS
    )


def test_volatile_fields_do_not_change_the_fingerprint(gw: GatewayHarness, clients: Make) -> None:
    body = {"model": ANTHROPIC_MODEL, "messages": prompt("hi"), "max_tokens": 10}
    same = fingerprint(body)
    assert fingerprint({**body, "stream": True}) == same
    assert fingerprint({**body, "metadata": {"user_id": "x"}}) == same
    assert fingerprint({**body, "stream_options": {"include_usage": True}, "user": "u"}) == same
    assert fingerprint({**body, "messages": prompt("hi!")}) != same
    assert fingerprint({**body, "model": SONNET}) != same
    assert fingerprint({**body, "system": "be brief"}) != same

    secret = gw.create_key(name="volatile")
    key_id = gw.last_key_id
    client, sent = clients("anthropic", secret)  # default retries
    words = prompt("Summarise the diff in one line.")
    client.messages.create(
        model=ANTHROPIC_MODEL, messages=words, max_tokens=MAX_TOKENS, metadata={"user_id": "a"}
    )
    with client.messages.stream(
        model=ANTHROPIC_MODEL, messages=words, max_tokens=MAX_TOKENS, metadata={"user_id": "b"}
    ) as stream:
        stream.get_final_message()
    with pytest.raises(anthropic.RateLimitError) as caught:
        client.messages.create(model=ANTHROPIC_MODEL, messages=words, max_tokens=MAX_TOKENS)
    assert sent.count == 3  # the refusal was not retried
    error: Any = caught.value
    assert error.status_code == 429
    assert error.response.headers["x-should-retry"] == "false"
    assert error.body["error"]["type"] == "rate_limit_error"
    assert error.body["error"]["message"].startswith("Loop detected")
    assert [row.streamed for row in gw.ledger(key_id)].count(True) == 1
    (block,) = gw.ledger(key_id, blocked=True)
    assert block.blocked_by == "loop-detection"


# ========================================================================== sessions


def session_rows(gw: GatewayHarness, key_id: str, session: str) -> list[LedgerRow]:
    return [row for row in gw.ledger(key_id) if row.session_id == session]


def test_claude_code_sessions_are_capped_each_on_their_own(
    gw: GatewayHarness, clients: Make
) -> None:
    secret = gw.create_key(name="claude-code")
    key_id = gw.last_key_id
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    sessions = {}
    for session in (first, second):
        sessions[session] = clients(
            "anthropic",
            secret,
            max_retries=0,
            default_headers={"x-claude-code-session-id": session},
        )

    def ask(client: Any, text: str) -> Any:
        return client.messages.create(
            model=ANTHROPIC_MODEL, messages=prompt(text), max_tokens=MAX_TOKENS
        )

    client, _ = sessions[first]
    for i in range(3):
        ask(client, f"session one, turn {i}")
    with pytest.raises(anthropic.RateLimitError) as caught:
        ask(client, "session one, turn 3")
    error: Any = caught.value
    assert error.body["error"]["type"] == "rate_limit_error"
    message = error.body["error"]["message"]
    assert f"Rate limit reached for session '{first}' (per-session:requests/minute)" in message
    assert "3 requests of 3 requests per minute used" in message

    # the second session has its own three
    other, _ = sessions[second]
    for i in range(3):
        ask(other, f"session two, turn {i}")
    with pytest.raises(anthropic.RateLimitError):
        ask(other, "session two, turn 3")

    # without a session header the session limit does not apply
    plain, _ = clients("anthropic", secret, max_retries=0)
    for i in range(4):
        ask(plain, f"no session, turn {i}")

    assert len(session_rows(gw, key_id, first)) == 3
    assert len(session_rows(gw, key_id, second)) == 3
    assert len(session_rows(gw, key_id, "")) == 0
    assert sum(1 for row in gw.ledger(key_id) if row.session_id is None) == 4
    blocks = gw.ledger(key_id, blocked=True)
    assert sorted(row.session_id or "" for row in blocks) == sorted([first, second])
    assert {row.blocked_by for row in blocks} == {"per-session:requests/minute"}
    views = gw.call(gw.gateway.budget_service.overview("per-session:requests/minute"))
    spent = {view.member: view.state.spent for view in views}
    assert spent[first] == 3
    assert spent[second] == 3


def test_codex_and_spendgate_session_headers(gw: GatewayHarness, clients: Make) -> None:
    secret = gw.create_key(name="codex")
    key_id = gw.last_key_id
    codex = f"codex-{uuid.uuid4()}"
    client, _ = clients("openai", secret, max_retries=0, default_headers={"session-id": codex})
    for i in range(3):
        client.chat.completions.create(
            model=OPENAI_MODEL, messages=prompt(f"codex turn {i}"), max_tokens=MAX_TOKENS
        )
    with pytest.raises(openai.RateLimitError) as caught:
        client.chat.completions.create(
            model=OPENAI_MODEL, messages=prompt("codex turn 3"), max_tokens=MAX_TOKENS
        )
    assert caught.value.code == "rate_limit_exceeded"
    assert len(session_rows(gw, key_id, codex)) == 3

    # x-spendgate-session comes first in the configured list; it is not sent upstream
    mine = f"mine-{uuid.uuid4()}"
    both, _ = clients(
        "anthropic",
        secret,
        max_retries=0,
        default_headers={"x-spendgate-session": mine, "x-claude-code-session-id": codex},
    )
    both.messages.create(
        model=ANTHROPIC_MODEL,
        messages=prompt("whose session?"),
        max_tokens=MAX_TOKENS,
        extra_headers={"x-test-run": "session-pick"},
    )
    assert len(session_rows(gw, key_id, mine)) == 1
    (record,) = records(gw, "session-pick")
    assert "x-spendgate-session" not in record.headers
    assert record.headers["x-claude-code-session-id"] == codex


def test_a_session_dollar_budget(gw: GatewayHarness, clients: Make) -> None:
    secret = gw.create_key(name="session-dollars")
    key_id = gw.last_key_id
    admitted: dict[str, int] = {}
    for session in (str(uuid.uuid4()), str(uuid.uuid4())):
        client, _ = clients(
            "anthropic",
            secret,
            max_retries=0,
            default_headers={"x-claude-code-session-id": session},
        )
        for i in range(10):
            try:
                client.messages.create(
                    model=SONNET,
                    messages=prompt(f"sonnet turn {i}"),
                    max_tokens=MAX_TOKENS,
                    extra_headers={"x-sim-output-tokens": "75"},
                )
            except anthropic.PaymentRequiredError as refused:
                error: Any = refused
                assert error.response.headers["x-should-retry"] == "false"
                message = error.body["error"]["message"]
                assert f"Budget exhausted for session '{session}'" in message
                assert "(session-dollars, daily)" in message
                break
        else:
            pytest.fail("the session budget never refused")
        admitted[session] = i
        rows = session_rows(gw, key_id, session)
        assert len(rows) == i
        assert sum(row.cost_nanos for row in rows) <= 3_000_000
    first, second = admitted.values()
    print(f"\nsession budget $0.003: {first} and {second} Sonnet requests per session")
    assert first == second >= 1  # the second session started from zero
    blocks = gw.ledger(key_id, blocked=True)
    assert {row.blocked_by for row in blocks} == {"session-dollars"}
    assert {row.session_id for row in blocks} == set(admitted)
    assert all(row.status == 402 for row in blocks)


# =================================================================== circuit breaker

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def breaker(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayHarness, ManualClock]]:
    clock = ManualClock(T0)

    def configure(data: dict[str, Any]) -> None:
        data["runaway"] = {"breaker_failures": 3, "breaker_cooldown_s": 1}

    harness = GatewayHarness(
        tmp_path_factory.mktemp("breaker") / "spendgate.db", configure=configure, clock=clock
    ).start()
    try:
        yield harness, clock
    finally:
        harness.stop()


@pytest.fixture
def breaker_clients(breaker: tuple[GatewayHarness, ManualClock]) -> Iterator[Make]:
    make, made = client_factory(breaker[0])
    try:
        yield make
    finally:
        for client in made:
            client.close()


def test_circuit_breaker_opens_probes_and_recovers(
    breaker: tuple[GatewayHarness, ManualClock], breaker_clients: Make
) -> None:
    gw, clock = breaker
    secret = gw.create_key(name="flaky")
    key_id = gw.last_key_id
    client, _ = breaker_clients("openai", secret, max_retries=0)
    run = {"x-test-run": "breaker"}

    def ask(headers: dict[str, str] | None = None, model: str = OPENAI_MODEL) -> Any:
        return client.chat.completions.create(
            model=model,
            messages=prompt("Is the upstream up?"),
            max_tokens=MAX_TOKENS,
            extra_headers={**run, **(headers or {})},
        )

    def refused_open(headers: dict[str, str] | None = None) -> openai.InternalServerError:
        upstream = len(records(gw, "breaker"))
        with pytest.raises(openai.InternalServerError) as caught:
            ask(headers)
        assert len(records(gw, "breaker")) == upstream  # failed fast: upstream not called
        error = caught.value
        assert error.status_code == 503
        assert error.code == "circuit_open"
        assert error.response.headers["x-should-retry"] == "false"
        return error

    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as failed:
            ask(FAIL)
        assert failed.value.status_code == 500
    assert len(records(gw, "breaker")) == 3

    error = refused_open()
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["retry-after-ms"] == "1000"
    assert "failed 3 times in a row for this key" in error.message

    # per key and model: the same key on another model, and another key, are unaffected
    ask(model="gpt-4o")
    other, _ = breaker_clients("openai", gw.create_key(name="steady"), max_retries=0)
    other.chat.completions.create(
        model=OPENAI_MODEL, messages=prompt("Is the upstream up?"), max_tokens=MAX_TOKENS
    )

    clock.advance(0.5)
    assert refused_open().response.headers["retry-after-ms"] == "500"

    clock.advance(0.5)  # cooled down: one probe goes through, fails, and re-opens it
    upstream = len(records(gw, "breaker"))
    with pytest.raises(openai.InternalServerError) as failed:
        ask(FAIL)
    assert failed.value.status_code == 500
    assert len(records(gw, "breaker")) == upstream + 1
    assert refused_open().response.headers["retry-after-ms"] == "1000"

    # cooled down again: while the probe is in flight, everyone else is told to wait
    clock.advance(1)
    probe_result: list[Any] = []
    probe_client, _ = breaker_clients("openai", secret, max_retries=0)
    upstream = len(records(gw, "breaker"))
    probe = threading.Thread(
        target=lambda: probe_result.append(
            probe_client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=prompt("Is the upstream up?"),
                max_tokens=MAX_TOKENS,
                extra_headers={**run, "x-sim-delay-ms": "400"},
            )
        )
    )
    probe.start()
    try:
        assert gw.wait_for(lambda: len(records(gw, "breaker")) > upstream)
        assert refused_open().response.headers["retry-after-ms"] == "1000"
    finally:
        probe.join(10)
    assert probe_result, "the probe failed"

    # the probe succeeded: closed, and the count of failures starts again from zero
    ask()
    with pytest.raises(openai.InternalServerError):
        ask(FAIL)
    ask()

    blocks = gw.ledger(key_id, blocked=True)
    assert len(blocks) == 4
    for row in blocks:
        assert row.blocked_by == "circuit-breaker"
        assert row.status == 503
        assert row.cost_nanos == 0
        assert row.would_cost_nanos > 0
    upstream_rows = gw.ledger(key_id)
    assert sorted(row.status for row in upstream_rows) == [200] * 4 + [500] * 5


def test_circuit_breaker_on_the_anthropic_surface(
    breaker: tuple[GatewayHarness, ManualClock], breaker_clients: Make
) -> None:
    gw, clock = breaker
    client, sent = breaker_clients("anthropic", gw.create_key(name="flaky-claude"), max_retries=0)

    def ask(headers: dict[str, str] | None = None) -> Any:
        return client.messages.create(
            model=ANTHROPIC_MODEL,
            messages=prompt("Are you there?"),
            max_tokens=MAX_TOKENS,
            extra_headers=headers or {},
        )

    for _ in range(3):
        with pytest.raises(anthropic.InternalServerError):
            ask(FAIL)
    with pytest.raises(anthropic.OverloadedError) as caught:
        ask()
    error: Any = caught.value
    assert error.status_code == 529
    assert error.body["error"]["type"] == "overloaded_error"
    assert error.response.headers["retry-after"] == "1"
    assert error.response.headers["x-should-retry"] == "false"
    clock.advance(1)
    ask()  # the probe succeeds
    ask()
    assert sent.count == 6


def test_token_counting_neither_trips_nor_resets_the_breaker(
    breaker: tuple[GatewayHarness, ManualClock], breaker_clients: Make
) -> None:
    """Token counting is free upstream and rate-limited apart from Messages (CLIENTS.md
    §6.6): its failures are not the model failing (three count_tokens 429s must not shut
    Messages off), and its answers are not the model answering (Claude Code's counts
    between failing Messages calls must not keep resetting the count, nor be the probe)."""
    gw, clock = breaker
    secret = gw.create_key(name="counting-claude")
    client, _ = breaker_clients("anthropic", secret, max_retries=0)
    run = "count-breaker"

    def count(headers: dict[str, str] | None = None) -> Any:
        return client.messages.count_tokens(
            model=ANTHROPIC_MODEL,
            messages=prompt("How long is this?"),
            extra_headers={"x-test-run": run, **(headers or {})},
        )

    def ask(headers: dict[str, str] | None = None) -> Any:
        return client.messages.create(
            model=ANTHROPIC_MODEL,
            messages=prompt("Is the model up?"),
            max_tokens=MAX_TOKENS,
            extra_headers={"x-test-run": run, **(headers or {})},
        )

    for _ in range(3):  # the counting endpoint's own rate limit
        with pytest.raises(anthropic.RateLimitError):
            count({"x-sim-status": "429"})
    ask()  # Messages is not shut off by it
    assert len(records(gw, run)) == 4

    for _ in range(3):  # three Messages failures in a row, counts answered in between
        with pytest.raises(anthropic.InternalServerError):
            ask(FAIL)
        assert count().input_tokens > 0
    assert len(records(gw, run)) == 10
    with pytest.raises(anthropic.OverloadedError) as caught:
        ask()
    assert "failed 3 times in a row" in caught.value.message
    assert len(records(gw, run)) == 10  # open: Messages failed fast

    clock.advance(1)  # cooled down: a count is not the probe, the next Messages call is
    count()
    with pytest.raises(anthropic.InternalServerError):
        ask(FAIL)
    with pytest.raises(anthropic.OverloadedError):
        ask()
    assert len(records(gw, run)) == 12


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_an_open_breaker_stops_each_sdk_after_one_request(
    breaker: tuple[GatewayHarness, ManualClock], breaker_clients: Make, kind: str
) -> None:
    """Issue 12, item 3: during the cool-down the refusal is not retryable, so an SDK with
    generous retries (Claude Code's 10, Codex's 5) sends exactly one request, gets
    spendgate's message, and does not probe the upstream; ``retry-after`` is what is left
    of the cool-down, not the whole of it."""
    gw, clock = breaker
    secret = gw.create_key(name=f"fail-fast-{kind}")
    client, sent = breaker_clients(kind, secret, max_retries=10)
    run = f"fail-fast-{kind}"
    model = OPENAI_MODEL if kind == "openai" else ANTHROPIC_MODEL

    def ask(sdk: Any, headers: dict[str, str] | None = None) -> Any:
        extra = {"x-test-run": run, **(headers or {})}
        create = sdk.chat.completions.create if kind == "openai" else sdk.messages.create
        messages = prompt("Fail fast?")
        return create(model=model, messages=messages, max_tokens=MAX_TOKENS, extra_headers=extra)

    once = client.with_options(max_retries=0)
    for _ in range(3):  # opens it (no retries here: the SDK would retry the 500s)
        with pytest.raises((openai.InternalServerError, anthropic.InternalServerError)):
            ask(once, FAIL)
    assert len(records(gw, run)) == 3
    clock.advance(0.25)
    sent.count = 0
    error_type = openai.InternalServerError if kind == "openai" else anthropic.OverloadedError
    started = time.monotonic()
    with pytest.raises(error_type) as caught:
        ask(client)
    gave_up_s = time.monotonic() - started
    assert sent.count == 1  # max_retries=10, and one request
    assert len(records(gw, run)) == 3  # the upstream was not called
    error: Any = caught.value
    assert error.status_code == (503 if kind == "openai" else 529)
    headers = error.response.headers
    assert headers["x-should-retry"] == "false"
    assert (headers["retry-after"], headers["retry-after-ms"]) == ("1", "750")  # what is left
    assert "It will try again in 0.8 s." in error.message
    assert gave_up_s < 5  # no backoff sleep: the SDK gives up at once
    clock.advance(1)  # cooled down: the next request is the probe and closes it
    ask(once)
    assert len(records(gw, run)) == 4


def test_sdk_retries_are_recorded_with_their_retry_count(
    breaker: tuple[GatewayHarness, ManualClock], breaker_clients: Make
) -> None:
    gw, _ = breaker
    secret = gw.create_key(name="retried")
    key_id = gw.last_key_id
    client, sent = breaker_clients("openai", secret)  # default retries: 3 requests
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model=OPENAI_MODEL,
            messages=prompt("Please work this time."),
            max_tokens=MAX_TOKENS,
            extra_headers={**FAIL, "x-test-run": "retried"},
        )
    assert sent.retry_counts == ["0", "1", "2"]
    upstream = records(gw, "retried")
    assert [r.headers.get("x-stainless-retry-count") for r in upstream] == ["0", "1", "2"]
    rows = gw.ledger(key_id)
    assert sorted(row.retry_count for row in rows) == [0, 1, 2]
    assert all(row.status == 500 for row in rows)
    assert sorted((r.retry_count, r.status) for r in gw.ledger(key_id, blocked=True)) == []


def test_usage_report_shows_what_retrying_cost(gw: GatewayHarness) -> None:
    """Two calls of one key: a first attempt and a (successful) SDK retry. The report counts
    the retry and its cost apart, so operators see what retrying cost."""
    from spendgate.services.reports import usage_report

    secret = gw.create_key(name="retry-cost", user="retry-cost-user")
    key_id = gw.last_key_id
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        for attempt in ("0", "1"):
            client.chat.completions.create(
                model=OPENAI_MODEL,
                messages=prompt(f"attempt {attempt}"),
                max_tokens=MAX_TOKENS,
                # what an SDK sends on its own retries (it keeps a caller's value as given)
                extra_headers={"x-stainless-retry-count": attempt},
            )
    first, retry = sorted(gw.ledger(key_id), key=lambda row: row.retry_count)
    assert (first.retry_count, retry.retry_count) == (0, 1)
    report = gw.call(
        usage_report(gw.gateway.storage, gw.gateway.clock, group_by="key", period="today", top=50)
    )
    (group,) = [g for g in report.groups if g.group == key_id]
    assert group.requests == 2
    assert group.retries == 1
    assert group.retry_cost_nanos == retry.cost_nanos > 0
