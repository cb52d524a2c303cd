"""Rate limits under concurrency, over real HTTP with the real ``openai`` SDK.

* A concurrency limit of N is exact: the simulator never has more than N of the key's
  requests in flight (measured from its own received/finished timestamps), the requests
  that found a slot went upstream, every other one got a 429 with ``retry-after``, and once
  all are done the counter is back at 0.
* A window limit (requests per minute) under 200 concurrent requests admits exactly its
  limit: the burst lies inside one window, so the one-bucket error bound of the rolling
  window (it can only refuse *longer*, never admit more) does not come into play.
* Token and dollar velocity limits reserve each request's worst case and settle it at the
  actual amount; sampled all through a burst, ``spent + reserved`` never exceeds the limit,
  and what the ledger charged stays within it.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.services.budgets import BudgetView
from spendgate.simulator.records import RequestRecord

MODEL = "gpt-4o-mini"  # $0.15 / $0.60 per 1M tokens
MAX_TOKENS = 100
OUTPUT_TOKENS = 75
PROMPT = [{"role": "user", "content": "Count from one to ten, slowly."}]

LIMITS: list[dict[str, Any]] = [
    {"name": "slots", "scope": "user", "match": "u-conc", "concurrency": 5},
    {"name": "rpm", "scope": "user", "match": "u-rpm", "requests": "20/minute"},
    {"name": "tpm", "scope": "user", "match": "u-tpm", "tokens": "1500/minute"},
    {"name": "velocity", "scope": "user", "match": "u-usd", "usd": "0.0005/minute"},
]


@contextmanager
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["limits"] = LIMITS

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    with gateway(tmp_path_factory.mktemp("accuracy")) as harness:
        yield harness


@dataclass
class Burst:
    admitted: int = 0
    refusals: list[openai.RateLimitError] = field(default_factory=list)
    other: list[BaseException] = field(default_factory=list)


async def burst(
    gw: GatewayHarness, secret: str, count: int, headers: dict[str, str], run: str
) -> Burst:
    """``count`` requests at once (a third of them streamed), no SDK retries."""
    sim = {"x-sim-output-tokens": str(OUTPUT_TOKENS), "x-test-run": run, **headers}

    async def one(client: openai.AsyncOpenAI, index: int) -> None:
        if index % 3:
            await client.chat.completions.create(
                model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=sim
            )
            return
        stream = await client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS, extra_headers=sim, stream=True
        )
        async for _ in stream:
            pass

    outcome = Burst()
    client = openai.AsyncOpenAI(
        api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=30
    )
    async with client:
        results = await asyncio.gather(
            *(one(client, i) for i in range(count)), return_exceptions=True
        )
    for result in results:
        if result is None:
            outcome.admitted += 1
        elif isinstance(result, openai.RateLimitError):
            outcome.refusals.append(result)
        else:
            outcome.other.append(result)
    assert not outcome.other, outcome.other[:3]
    return outcome


def records(gw: GatewayHarness, run: str) -> list[RequestRecord]:
    return [r for r in list(gw.sim.records) if r.headers.get("x-test-run") == run]


def max_in_flight(found: list[RequestRecord]) -> int:
    """The most requests the simulator was serving at one instant (a finish at the same
    instant as a start counts as before it)."""
    events: list[tuple[float, int]] = []
    for record in found:
        assert record.finished_at is not None
        events += [(record.received_at, 1), (record.finished_at, -1)]
    events.sort()
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    return peak


def views(gw: GatewayHarness, name: str) -> list[BudgetView]:
    return gw.call(gw.gateway.budget_service.overview(name))


def one_view(gw: GatewayHarness, name: str) -> BudgetView:
    (view,) = views(gw, name)
    return view


def worst(gw: GatewayHarness, unit: Unit) -> int:
    """The largest worst case the gateway holds for one request of `burst`: its body's byte
    bound, which a request holds while that fits whole (and its exact count, smaller,
    near the limit: docs/budgets.md). Every admitted request holds at most this, so a
    refusal means less than this was left: at least ``limit // worst`` are admitted."""
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    assert route.price is not None
    amounts = []
    for extra in ({}, {"stream": True}):
        body = {"model": MODEL, "messages": PROMPT, "max_tokens": MAX_TOKENS, **extra}
        with counting_with(BYTE_BOUND):
            count = tokens.count_chat_input(MODEL, body)
        case = worst_case(
            route.price,
            input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
            input_exact=count.exact,
            ceiling=MAX_TOKENS,
            choices=1,
        )
        amounts.append(case.amount(unit, MAX_TOKENS))
    return max(amounts)


@contextmanager
def sampling(gw: GatewayHarness, name: str) -> Iterator[list[tuple[int, int, int]]]:
    """(spent, reserved, limit) of one counter, read every few ms while the block runs."""
    samples: list[tuple[int, int, int]] = []
    stop = threading.Event()

    async def sample() -> None:
        while not stop.is_set():
            for view in await gw.gateway.budget_service.overview(name):
                samples.append((view.state.spent, view.state.reserved, view.state.limit))
            await asyncio.sleep(0.002)

    task = asyncio.run_coroutine_threadsafe(sample(), gw.loop)
    try:
        yield samples
    finally:
        stop.set()
        task.result(5)


def check_refusal(refusal: openai.RateLimitError, kind: str) -> float:
    """A window limit's 429 ``rate_limit_exceeded``: a wait of at most 60 s comes as
    ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``; a longer one as
    ``x-should-retry: false`` and no retry-after at all. Returns the wait the message gives."""
    assert refusal.status_code == 429
    assert refusal.code == "rate_limit_exceeded"
    assert refusal.type == kind
    match = re.search(r"Room frees up in ([0-9.]+) s\.$", refusal.message)
    assert match, refusal.message
    wait = float(match.group(1))
    headers = refusal.response.headers
    if headers["x-should-retry"] == "false":
        assert "retry-after" not in headers
        assert "retry-after-ms" not in headers
        assert wait >= 60
        return wait
    assert headers["x-should-retry"] == "true"
    seconds, millis = int(headers["retry-after"]), int(headers["retry-after-ms"])
    assert 1 <= seconds <= 60
    assert 1 <= millis <= 60_000
    assert seconds == -(-millis // 1000)
    assert abs(millis / 1000 - wait) <= 0.051  # the message rounds to a tenth
    return wait


# ------------------------------------------------------------------------- concurrency


async def test_concurrency_limit_is_exact_under_50_concurrent_requests(
    gw: GatewayHarness,
) -> None:
    secret = gw.create_key(name="conc", user="u-conc")
    key_id = gw.last_key_id
    outcome = await burst(gw, secret, 50, {"x-sim-delay-ms": "300"}, "conc")

    found = records(gw, "conc")
    peak = max_in_flight(found)
    print(f"\nconcurrency 5: peak {peak} in flight at the simulator, {outcome.admitted} of 50")
    assert peak == 5  # never more than the limit, and every slot was used
    # exactly the requests that found a slot went upstream; all the others were refused
    assert len(found) == outcome.admitted == len(gw.ledger(key_id))
    assert outcome.admitted >= 5
    assert outcome.admitted + len(outcome.refusals) == 50
    for refusal in outcome.refusals:
        assert check_refusal(refusal, "requests") == 1.0  # a slot frees when one ends
        assert refusal.response.headers["retry-after-ms"] == "1000"
        assert "5 requests in flight of 5 allowed at once" in refusal.message
    blocks = gw.ledger(key_id, blocked=True)
    assert len(blocks) == len(outcome.refusals)
    assert {row.blocked_by for row in blocks} == {"slots:concurrency"}

    view = one_view(gw, "slots:concurrency")
    assert (view.state.spent, view.state.reserved) == (0, 0)  # every slot given back

    # a slot frees as soon as a request ends: five more in a row all pass
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        for _ in range(5):
            client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS)
    view = one_view(gw, "slots:concurrency")
    assert (view.state.spent, view.state.reserved) == (0, 0)


# ---------------------------------------------------------------------- window limits


async def test_requests_per_minute_admits_exactly_the_limit_of_200(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="rpm", user="u-rpm")
    key_id = gw.last_key_id
    with sampling(gw, "rpm:requests/minute") as samples:
        outcome = await burst(gw, secret, 200, {}, "rpm")
    retryable = sum(r.response.headers["x-should-retry"] == "true" for r in outcome.refusals)
    print(f"\n20/minute: {outcome.admitted} of 200 admitted; {retryable} refusals retryable")
    assert outcome.admitted == 20
    assert len(records(gw, "rpm")) == 20
    assert len(gw.ledger(key_id)) == 20
    assert len(outcome.refusals) == 180
    waits = [check_refusal(refusal, "requests") for refusal in outcome.refusals]
    # room frees when the burst's bucket (6 s wide) leaves the minute: 60-66 s from now
    assert all(54 <= wait <= 66 for wait in waits), waits
    for refusal in outcome.refusals:
        assert "Rate limit reached for user 'u-rpm' (rpm:requests/minute)" in refusal.message
        assert "20 requests of 20 requests per minute used" in refusal.message
    assert samples
    assert max(spent + reserved for spent, reserved, _ in samples) <= 20
    view = one_view(gw, "rpm:requests/minute")
    assert (view.state.spent, view.state.reserved) == (20, 0)
    assert len(gw.ledger(key_id, blocked=True)) == 180


async def test_tokens_per_minute_never_exceeds_the_limit(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="tpm", user="u-tpm")
    key_id = gw.last_key_id
    limit = 1500
    with sampling(gw, "tpm:tokens/minute") as samples:
        outcome = await burst(gw, secret, 200, {}, "tpm")
    rows = gw.ledger(key_id)
    charged = sum(row.input_tokens + row.output_tokens for row in rows)
    reserve = worst(gw, Unit.TOKENS)
    actual = min(row.input_tokens + row.output_tokens for row in rows)
    peak = max(spent + reserved for spent, reserved, _ in samples)
    print(
        f"\n{limit} tokens/minute: {outcome.admitted} of 200 admitted, {charged} tokens "
        f"charged, peak spent+reserved {peak} (worst case {reserve}, actual {actual})"
    )
    assert len(samples) > 3
    assert peak <= limit
    assert charged <= limit
    assert len(rows) == outcome.admitted == len(records(gw, "tpm"))
    assert limit // reserve <= outcome.admitted <= limit // actual
    for refusal in outcome.refusals:
        check_refusal(refusal, "tokens")
    view = one_view(gw, "tpm:tokens/minute")
    assert (view.state.spent, view.state.reserved) == (charged, 0)


async def test_dollar_velocity_never_exceeds_the_limit(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="usd", user="u-usd")
    key_id = gw.last_key_id
    limit = 500_000  # $0.0005 a minute: about ten requests
    with sampling(gw, "velocity:usd/minute") as samples:
        outcome = await burst(gw, secret, 200, {}, "usd")
    rows = gw.ledger(key_id)
    charged = sum(row.cost_nanos for row in rows)
    reserve = worst(gw, Unit.NANOS)
    actual = min(row.cost_nanos for row in rows)
    peak = max(spent + reserved for spent, reserved, _ in samples)
    print(
        f"\n$0.0005/minute: {outcome.admitted} of 200 admitted, {charged} nanos charged, "
        f"peak spent+reserved {peak} (worst case {reserve}, actual {actual})"
    )
    assert peak <= limit
    assert charged <= limit
    assert len(rows) == outcome.admitted == len(records(gw, "usd"))
    assert limit // reserve <= outcome.admitted <= limit // actual
    for refusal in outcome.refusals:
        check_refusal(refusal, "requests")  # a dollar velocity limit reads as requests
    view = one_view(gw, "velocity:usd/minute")
    assert (view.state.spent, view.state.reserved) == (charged, 0)


# ------------------------------------------------------------ manual clock, window edges

EDGE_LIMITS: list[dict[str, Any]] = [
    {"name": "edge", "scope": "user", "match": "u-edge", "requests": "10/minute"},
    {"name": "per-second", "scope": "user", "match": "u-sec", "requests": "2/second"},
    {"name": "daily", "scope": "user", "match": "u-day", "requests": "100/day"},
]
MS = timedelta(milliseconds=1)


@contextmanager
def manual_gateway(tmp_path: Path, start: datetime) -> Iterator[tuple[GatewayHarness, ManualClock]]:
    clock = ManualClock(start)

    def configure(data: dict[str, Any]) -> None:
        data["limits"] = EDGE_LIMITS

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure, clock=clock)
    harness.start()
    try:
        yield harness, clock
    finally:
        harness.stop()


def ask(client: openai.OpenAI) -> openai.RateLimitError | None:
    """One request: None if admitted, the refusal if refused."""
    try:
        client.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS)
    except openai.RateLimitError as refusal:
        return refusal
    return None


def retry_at(refusal: openai.RateLimitError, now: datetime) -> datetime:
    """When the gateway said to come back (``retry-after-ms`` from ``now``)."""
    assert refusal.response.headers["x-should-retry"] == "true"
    check_refusal(refusal, "requests")
    return now + timedelta(milliseconds=int(refusal.response.headers["retry-after-ms"]))


def test_ten_per_minute_at_the_window_edge(tmp_path: Path) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)  # 1 s into a 6 s bucket
    with manual_gateway(tmp_path, t0) as (gw, clock):
        secret = gw.create_key(name="edge", user="u-edge")
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
            assert [ask(client) for _ in range(10)] == [None] * 10
            # Right after a burst room frees when the burst's bucket leaves the minute:
            # 65 s from now, longer than a client should sleep, so: do not retry.
            refusal = ask(client)
            assert refusal is not None
            assert check_refusal(refusal, "requests") == 65.0
            assert refusal.response.headers["x-should-retry"] == "false"

            clock.set(t0 + timedelta(seconds=20))
            refusal = ask(client)
            assert refusal is not None
            moment = retry_at(refusal, clock.now())
            assert refusal.response.headers["retry-after"] == "45"
            assert refusal.response.headers["retry-after-ms"] == "45000"
            # a true sliding window would have room at t0 + 60 s; buckets of 6 s make it
            # later by less than one bucket, never earlier
            assert timedelta(0) <= moment - (t0 + timedelta(minutes=1)) <= timedelta(seconds=6)

            clock.set(moment - MS)  # just before the oldest bucket leaves
            refusal = ask(client)
            assert refusal is not None
            assert refusal.response.headers["retry-after-ms"] == "1"
            assert retry_at(refusal, clock.now()) == moment
            clock.set(moment)  # just after: the whole window is free again
            assert [ask(client) for _ in range(10)] == [None] * 10
            assert ask(client) is not None
        key_id = gw.last_key_id
        assert len(gw.ledger(key_id)) == 20
        assert len(gw.ledger(key_id, blocked=True)) == 4


def test_two_per_second_at_the_window_edge(tmp_path: Path) -> None:
    t0 = datetime(2026, 1, 1, 12, 0, 0, 50_000, tzinfo=UTC)  # 50 ms into a 100 ms bucket
    with manual_gateway(tmp_path, t0) as (gw, clock):
        secret = gw.create_key(name="sec", user="u-sec")
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
            assert [ask(client), ask(client)] == [None, None]
            refusal = ask(client)
            assert refusal is not None
            moment = retry_at(refusal, t0)
            assert refusal.response.headers["retry-after-ms"] == "1050"
            assert refusal.response.headers["retry-after"] == "2"
            assert timedelta(0) <= moment - (t0 + timedelta(seconds=1)) <= 100 * MS
            clock.set(moment - MS)
            assert ask(client) is not None
            clock.set(moment)
            results = [ask(client) for _ in range(3)]
            assert results[:2] == [None, None]
            assert results[2] is not None


def test_a_day_long_wait_is_not_retryable_and_the_sdks_send_once(tmp_path: Path) -> None:
    """100/day, full: room frees in about a day, so no retry-after but
    ``x-should-retry: false``, and both SDKs with their default retries send ONE request."""
    t0 = datetime(2026, 1, 1, 9, 30, tzinfo=UTC)
    with manual_gateway(tmp_path, t0) as (gw, _clock):
        secret = gw.create_key(name="day", user="u-day")
        key_id = gw.last_key_id

        async def fill() -> Burst:
            return await burst(gw, secret, 100, {}, "day")

        outcome = asyncio.run(fill())
        assert outcome.admitted == 100

        sent: list[httpx2.Request] = []
        http = httpx2.Client(event_hooks={"request": [sent.append]})
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, http_client=http) as oai:
            assert oai.max_retries == 2
            with pytest.raises(openai.RateLimitError) as caught:
                oai.chat.completions.create(model=MODEL, messages=PROMPT, max_tokens=MAX_TOKENS)
        assert len(sent) == 1
        wait = check_refusal(caught.value, "requests")
        assert timedelta(days=1) <= timedelta(seconds=wait) <= timedelta(hours=26.4)
        assert "100 requests of 100 requests per day used" in caught.value.message

        sent.clear()
        http = httpx2.Client(event_hooks={"request": [sent.append]})
        with anthropic.Anthropic(api_key=secret, base_url=gw.url, http_client=http) as ant:
            assert ant.max_retries == 2
            with pytest.raises(anthropic.RateLimitError) as refused:
                ant.messages.create(model="claude-haiku-4-5", messages=PROMPT, max_tokens=50)
        assert len(sent) == 1
        error = refused.value
        assert error.status_code == 429
        assert error.response.headers["x-should-retry"] == "false"
        assert "retry-after" not in error.response.headers
        body: Any = error.body
        assert body["error"]["type"] == "rate_limit_error"
        assert (
            "Rate limit reached for user 'u-day' (daily:requests/day)" in body["error"]["message"]
        )
        assert len(gw.ledger(key_id)) == 100
        assert len(gw.ledger(key_id, blocked=True)) == 2
