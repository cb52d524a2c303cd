"""Rate-limit headers as the real SDKs receive them, and the SDKs' retries on a 429.

* Success: OpenAI ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` with resets
  as Go durations (``1m5s``, ``59.9s``), read through ``with_raw_response``; Anthropic
  ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` with RFC 3339 ``Z``
  resets. A manual clock makes every value exact.
* A transient 429 carries ``retry-after`` and ``retry-after-ms`` (<= 60 s): the SDKs with
  their default ``max_retries=2`` sleep exactly that long and retry; a ``2/second`` window
  lets the first retry in, a held concurrency slot refuses all three requests. A long wait
  is ``x-should-retry: false``: one request, no retry (CLIENTS.md §0 facts 7-10, §5.3).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.domain import tokens
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.pipeline.worst_case import input_upper_bound

OPENAI_MODEL = "gpt-4o-mini"
ANTHROPIC_MODEL = "claude-haiku-4-5"
PROMPT = [{"role": "user", "content": "What do the rate-limit headers say?"}]
MAX_TOKENS = 100
FAST = {"x-sim-output-tokens": "40"}
T0 = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)  # 1 s into a 6 s bucket of the minute


# ------------------------------------------------------------------ headers on success


@pytest.fixture
def manual(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayHarness, ManualClock]]:
    clock = ManualClock(T0)

    def configure(data: dict[str, Any]) -> None:
        data["limits"] = [
            {"name": "per-key", "scope": "key", "requests": "100/minute", "tokens": "20000/minute"}
        ]

    harness = GatewayHarness(
        tmp_path_factory.mktemp("headers") / "spendgate.db", configure=configure, clock=clock
    ).start()
    try:
        yield harness, clock
    finally:
        harness.stop()


def reserved_tokens(model: str, body: dict[str, Any]) -> int:
    """The tokens the gateway reserves: input upper bound plus the output ceiling. The
    limits have room to spare, so the input is priced by the body's byte bound, never
    counted (docs/budgets.md, "The worst case priced before the call")."""
    counter = tokens.count_anthropic_input if "claude" in model else tokens.count_chat_input
    with counting_with(BYTE_BOUND):
        count = counter(model, body)
    return input_upper_bound(count.tokens, None) + body["max_tokens"]


def test_openai_sdk_reads_x_ratelimit_headers(
    manual: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = manual
    secret = gw.create_key(name="oai-headers")
    body = {"model": OPENAI_MODEL, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    worst = reserved_tokens(OPENAI_MODEL, body)
    used = 0
    expected = [
        # (clock, remaining requests, reset): the first request's bucket (12:00:00-06)
        # leaves the minute at 12:01:06
        (T0, 99, "1m5s"),
        (T0 + timedelta(seconds=5), 98, "1m0s"),
        (T0 + timedelta(seconds=5.1), 97, "59.9s"),
        (T0 + timedelta(seconds=30.25), 96, "34.75s"),
    ]
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        for moment, remaining, reset in expected:
            clock.set(moment)
            raw = client.chat.completions.with_raw_response.create(**body, extra_headers=FAST)
            completion = raw.parse()
            assert completion.usage is not None
            headers = raw.headers
            assert headers["x-ratelimit-limit-requests"] == "100"
            assert headers["x-ratelimit-remaining-requests"] == str(remaining)
            assert headers["x-ratelimit-reset-requests"] == reset
            assert headers["x-ratelimit-limit-tokens"] == "20000"
            # what is settled counts at its actual size, this request at its worst case
            assert headers["x-ratelimit-remaining-tokens"] == str(20000 - used - worst)
            assert headers["x-ratelimit-reset-tokens"] == reset
            used += completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert "anthropic-ratelimit-requests-limit" not in headers


def test_anthropic_sdk_reads_anthropic_ratelimit_headers(
    manual: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = manual
    secret = gw.create_key(name="ant-headers")
    body = {"model": ANTHROPIC_MODEL, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    worst = reserved_tokens(ANTHROPIC_MODEL, body)
    with anthropic.Anthropic(api_key=secret, base_url=gw.url, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(**body, extra_headers=FAST)
        message = raw.parse()
        headers = raw.headers
        assert headers["anthropic-ratelimit-requests-limit"] == "100"
        assert headers["anthropic-ratelimit-requests-remaining"] == "99"
        assert headers["anthropic-ratelimit-requests-reset"] == "2026-01-01T12:01:06Z"
        assert headers["anthropic-ratelimit-tokens-limit"] == "20000"
        assert headers["anthropic-ratelimit-tokens-remaining"] == str(20000 - worst)
        assert headers["anthropic-ratelimit-tokens-reset"] == "2026-01-01T12:01:06Z"
        reset = datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
        assert reset.tzinfo is not None
        assert reset - T0 == timedelta(seconds=65)
        assert "x-ratelimit-limit-requests" not in headers

        clock.set(T0 + timedelta(seconds=7.5))  # a later bucket: the first still resets first
        used = message.usage.input_tokens + message.usage.output_tokens
        raw = client.messages.with_raw_response.create(**body, extra_headers=FAST, stream=True)
        headers = raw.headers
        events = [event.type for event in raw.parse()]
        assert events[0] == "message_start"
        assert events[-1] == "message_stop"
        assert headers["anthropic-ratelimit-requests-remaining"] == "98"
        assert headers["anthropic-ratelimit-requests-reset"] == "2026-01-01T12:01:06Z"
        assert headers["anthropic-ratelimit-tokens-remaining"] == str(20000 - used - worst)


# ------------------------------------------------------------------- retries on a 429

RETRY_LIMITS: list[dict[str, Any]] = [
    {"name": "burst-ope", "scope": "user", "match": "u-burst-ope", "requests": "2/second"},
    {"name": "burst-ant", "scope": "user", "match": "u-burst-ant", "requests": "2/second"},
    {"name": "one-slot", "scope": "user", "match": "u-slot", "concurrency": 1},
    # every service its own: keys without a service are not counted
    {"name": "hourly", "scope": "service", "requests": "2/hour"},
    # a whole window holds fewer tokens than one request reserves (its input + MAX_TOKENS)
    {"name": "few-tokens", "scope": "user", "match": "u-few", "tokens": "50/10s"},
    {"name": "closed", "scope": "user", "match": "u-closed", "requests": "5/10s"},
    # room for one request's worst case (about 150 tokens), not for two
    {"name": "held-tokens", "scope": "user", "match": "u-held", "tokens": "250/minute"},
]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["limits"] = RETRY_LIMITS

    harness = GatewayHarness(
        tmp_path_factory.mktemp("retries") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


class Sent:
    """An httpx event hook: when each request left, and the responses that came back."""

    def __init__(self) -> None:
        self.at: list[float] = []
        self.retry_counts: list[str | None] = []
        self.responses: list[httpx2.Response] = []

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]

    def request(self, request: httpx2.Request) -> None:
        self.at.append(time.monotonic())
        self.retry_counts.append(request.headers.get("x-stainless-retry-count"))

    def response(self, response: httpx2.Response) -> None:
        self.responses.append(response)

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.at, self.at[1:], strict=False)]


@pytest.fixture
def clients(gw: GatewayHarness) -> Iterator[Callable[[str, str], tuple[Any, Sent]]]:
    """SDK clients with their DEFAULT max_retries (2), each with a `Sent` log."""
    made: list[Any] = []

    def make(kind: str, secret: str) -> tuple[Any, Sent]:
        sent = Sent()
        client = gw.sdk_client(
            kind, secret, {"request": [sent.request], "response": [sent.response]}
        )
        assert client.max_retries == 2
        made.append(client)
        return client, sent

    try:
        yield make
    finally:
        for client in made:
            client.close()


def send(kind: str, client: Any, headers: dict[str, str] | None = None) -> Any:
    extra = {**FAST, **(headers or {})}
    if kind == "anthropic":
        return client.messages.create(
            model=ANTHROPIC_MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=extra
        )
    return client.chat.completions.create(
        model=OPENAI_MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=extra
    )


def waits(response: httpx2.Response) -> tuple[int, int]:
    """A transient 429's ``retry-after`` and ``retry-after-ms``, checked for consistency."""
    assert response.status_code == 429
    headers = response.headers
    assert headers["x-should-retry"] == "true"
    seconds, millis = int(headers["retry-after"]), int(headers["retry-after-ms"])
    assert 1 <= seconds <= 60
    assert 1 <= millis <= 60_000
    assert seconds == -(-millis // 1000)
    return seconds, millis


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_sdk_retries_after_retry_after_ms_and_gets_in(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Sent]], kind: str
) -> None:
    secret = gw.create_key(name=f"burst-{kind}", user=f"u-burst-{kind[:3]}")
    key_id = gw.last_key_id
    client, sent = clients(kind, secret)
    send(kind, client)
    send(kind, client)  # the second-long window is full (the 100 ms buckets: ~1.1 s)
    sent.reset()
    send(kind, client)  # refused once, then let in by the SDK's own retry
    assert len(sent.at) == 2, [r.status_code for r in sent.responses]
    assert [r.status_code for r in sent.responses] == [429, 200]
    _, millis = waits(sent.responses[0])
    assert 900 <= millis <= 1100
    # the SDK slept what the gateway said; and at that moment there was room again
    (gap,) = sent.gaps
    assert millis / 1000 <= gap <= millis / 1000 + 0.25, (gap, millis)
    assert sent.retry_counts == ["0", "1"]
    assert len(gw.ledger(key_id)) == 3
    (block,) = gw.ledger(key_id, blocked=True)
    assert block.blocked_by == f"burst-{kind[:3]}:requests/second"
    assert block.status == 429
    assert block.retry_count == 0
    assert [row.retry_count for row in gw.ledger(key_id)] == [0, 0, 1]


def test_sdks_make_three_requests_spaced_by_retry_after(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Sent]]
) -> None:
    """One slot, held by a slow request: every retry is refused again (``retry-after: 1``).
    Both SDKs at once, against the same slot."""
    secret = gw.create_key(name="slot", user="u-slot")
    slow_client, _ = clients("openai", secret)
    held: list[Any] = []
    before = len(gw.sim.records)
    slow = threading.Thread(
        target=lambda: held.append(send("openai", slow_client, {"x-sim-delay-ms": "2600"}))
    )
    slow.start()
    outcomes: dict[str, tuple[Sent, BaseException | None]] = {}

    def refused(kind: str) -> None:
        client, sent = clients(kind, secret)
        try:
            send(kind, client)
        except (openai.RateLimitError, anthropic.RateLimitError) as error:
            outcomes[kind] = (sent, error)
        else:
            outcomes[kind] = (sent, None)

    try:
        assert gw.wait_for(lambda: len(gw.sim.records) > before)  # the slot is taken
        threads = [threading.Thread(target=refused, args=(k,)) for k in ("openai", "anthropic")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        slow.join(10)
    assert held, "the slow request failed"
    for kind, (sent, error) in outcomes.items():
        assert error is not None, kind
        assert len(sent.at) == 3, kind
        assert sent.retry_counts == ["0", "1", "2"]
        for response in sent.responses:
            assert waits(response) == (1, 1000)
        for gap in sent.gaps:
            assert 1.0 <= gap <= 1.25, (kind, sent.gaps)
    assert len(outcomes) == 2
    assert len(gw.sim.records) == before + 1  # none of the six went upstream
    blocks = gw.ledger(gw.last_key_id, blocked=True)
    assert len(blocks) == 6
    assert {row.blocked_by for row in blocks} == {"one-slot:concurrency"}
    assert sorted(row.retry_count for row in blocks) == [0, 0, 1, 1, 2, 2]


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_long_wait_is_refused_once_without_retry_after(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Sent]], kind: str
) -> None:
    secret = gw.create_key(name=f"hourly-{kind}", service=f"svc-{kind}")
    client, sent = clients(kind, secret)
    send(kind, client)
    send(kind, client)
    error_type = anthropic.RateLimitError if kind == "anthropic" else openai.RateLimitError
    with pytest.raises(error_type) as caught:
        send(kind, client)
    assert len(sent.at) == 3  # 2 admitted + ONE refused: no retry
    response = sent.responses[-1]
    assert response.status_code == 429
    assert response.headers["x-should-retry"] == "false"
    assert "retry-after" not in response.headers
    assert "retry-after-ms" not in response.headers
    message = str(caught.value)
    assert f"Rate limit reached for service 'svc-{kind}' (hourly:requests/hour)" in message
    assert "2 requests of 2 requests per hour used" in message


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_request_no_window_can_hold_is_refused_once_without_retry_after(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Sent]], kind: str
) -> None:
    """A token limit smaller than the request's worst case never has room for it, however
    long the client waits: the refusal is not retryable. It said "Room frees up in 0.0 s"
    with ``retry-after: 1`` and ``x-should-retry: true``, and the SDKs sent it three times."""
    secret = gw.create_key(name=f"few-{kind}", user="u-few")
    client, sent = clients(kind, secret)
    error_type = anthropic.RateLimitError if kind == "anthropic" else openai.RateLimitError
    with pytest.raises(error_type) as caught:
        send(kind, client)
    assert len(sent.at) == 1  # no retry
    headers = sent.responses[0].headers
    assert headers["x-should-retry"] == "false"
    assert "retry-after" not in headers
    assert "retry-after-ms" not in headers
    message = str(caught.value)
    assert "(few-tokens:tokens/10s): 0 tokens of 50 tokens per 10 seconds used" in message
    assert "more than a whole window holds" in message
    assert "Room frees up" not in message


def test_a_rate_limit_lowered_to_zero_refuses_without_retry_after(
    gw: GatewayHarness, clients: Callable[[str, str], tuple[Any, Sent]]
) -> None:
    """An operator's run-time limit of 0 lets nothing through until it is raised: every
    request is refused once, not retried by the SDK every second."""
    secret = gw.create_key(name="closed", user="u-closed")
    client, sent = clients("openai", secret)
    gw.call(gw.gateway.budget_service.set_limit("closed:requests/10s", "0", None))
    try:
        with pytest.raises(openai.RateLimitError) as caught:
            send("openai", client)
    finally:
        gw.call(gw.gateway.budget_service.clear_override("closed:requests/10s"))
    assert len(sent.at) == 1
    headers = sent.responses[0].headers
    assert headers["x-should-retry"] == "false"
    assert "retry-after" not in headers
    assert "The limit lets none through" in str(caught.value)


def test_a_token_window_held_by_a_request_in_flight_is_retryable(gw: GatewayHarness) -> None:
    """A token limit full only of what a request in flight reserved (its worst case, given
    back but for its real use when it ends) has room as soon as that request ends, not when
    the window moves on: ``retry-after`` (how long a request typically takes), and
    ``x-should-retry: true``. It said "Room frees up in 61 s" with ``x-should-retry:
    false``, and the next request, sent a moment later, was admitted."""
    body = {"model": OPENAI_MODEL, "messages": PROMPT, "max_tokens": MAX_TOKENS}
    worst = reserved_tokens(OPENAI_MODEL, body)
    assert worst <= 250 < 2 * worst
    secret = gw.create_key(name="held", user="u-held")
    slow_client = gw.sdk_client("openai", secret, max_retries=0)
    client = gw.sdk_client("openai", secret, max_retries=0)
    before = len(gw.sim.records)
    held: list[Any] = []
    slow = threading.Thread(
        target=lambda: held.append(send("openai", slow_client, {"x-sim-delay-ms": "1500"}))
    )
    slow.start()
    try:
        assert gw.wait_for(lambda: len(gw.sim.records) > before)  # its tokens are reserved
        with pytest.raises(openai.RateLimitError) as caught:
            send("openai", client)
    finally:
        slow.join(10)
        slow_client.close()
    assert held, "the slow request failed"
    seconds, _ = waits(caught.value.response)
    assert seconds < 60
    message = str(caught.value)
    assert f"({worst} tokens of it reserved by requests in flight" in message
    reset = caught.value.response.headers["x-ratelimit-reset-tokens"]
    assert not reset.startswith("1m"), reset
    with client:
        send("openai", client)  # the window has not moved on: the slow one gave back room
