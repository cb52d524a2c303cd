"""The parallel-agent case of issue 10: Claude Code sub-agents on "$40 a day on Opus".

Sixteen Claude-Code-shaped requests (the real ``anthropic`` SDK, ``max_tokens: 32000``,
a ~80 KB body of system prompt and tools marked for caching, ``?beta=true``, Claude Code's
headers; CLIENTS.md §8.1) go out at once. Each one's worst case is about $3, so sixteen
reserved together would be ~$48 on a $40 budget that their real cost (~$0.10 each)
barely touches. What must hold:

1. while the spent amount is far below the limit, none is refused: each is admitted whole,
   clamped to what is left, or waits in the admission line for earlier ones to settle;
   each client sends exactly one request (no hidden SDK retry of a refusal);
2. once the budget really is spent, each of sixteen clients that retries as the SDK does
   by default sends exactly ONE request and gets ``402 billing_error`` with
   ``x-should-retry: false`` (simulator and ledger agree: nothing went upstream, sixteen
   block rows);
3. when room is held by a request in flight beyond the line's wait bound, the refusal is
   retryable: ``429 rate_limit_error``, ``x-should-retry: true``, ``retry-after`` of at most
   60 s, and a message that says the room is reserved by requests in flight.

Counts decide every outcome: phase 1's wait bound (30 s) is far beyond what sixteen
requests of 100 ms need, and phase 3 holds its request in flight until the refusal is in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.admission import worst_case
from spendgate.domain.budgets import Unit
from spendgate.pipeline.worst_case import input_upper_bound
from spendgate.simulator.records import RequestRecord

OPUS = "claude-opus-4-1"  # $15 input, $1.50 cache read, $18.75 5-minute write, $75 output
OPUS_IN, OPUS_READ, OPUS_WRITE, OPUS_OUT = 15_000, 1_500, 18_750, 75_000  # nanos a token
AGENTS = 16
CEILING = 32_000
LIMIT = 40_000_000_000  # $40
CACHED = 16_000  # most of Claude Code's prompt is read from the cache on every turn
AGENT_SIM = {
    "x-sim-output-tokens": "300",
    "x-sim-cached-tokens": str(CACHED),
    "x-sim-delay-ms": "100",  # in flight long enough for the others to find room held
}
BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27"

_PARAGRAPH = (
    "You are an interactive CLI tool that helps users with software engineering tasks. "
    "Use the instructions below and the tools available to you to assist the user. "
    "Read files before editing them, keep changes minimal, run the tests, and report "
    "what you changed and why in a few short sentences. "
)
_TOOL_TEXT = (
    "Performs the operation on the local workspace. Paths must be absolute. Prefer this "
    "tool over shell commands for the same effect; batch independent calls together. "
)


def _tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": _TOOL_TEXT * 10,
        "input_schema": {
            "type": "object",
            "properties": {
                "path": {"type": "string", "description": "Absolute path of the target."},
                "pattern": {"type": "string", "description": "What to look for, if any."},
                "content": {"type": "string", "description": "New content, for writes."},
            },
            "required": ["path"],
            "additionalProperties": False,
        },
    }


TOOLS = [
    _tool(name)
    for name in (
        "Task", "Bash", "Glob", "Grep", "LS", "Read",
        "Edit", "MultiEdit", "Write", "WebFetch", "TodoWrite", "NotebookEdit",
    )
]  # fmt: skip
SYSTEM = [
    {"type": "text", "text": "You are Claude Code, Anthropic's official CLI for Claude."},
    {"type": "text", "text": _PARAGRAPH * 55, "cache_control": {"type": "ephemeral"}},
    {"type": "text", "text": _PARAGRAPH * 50, "cache_control": {"type": "ephemeral"}},
]


def agent_body(task: str) -> dict[str, Any]:
    """What Claude Code sends for one turn of a sub-agent (without ``stream``)."""
    return {
        "model": OPUS,
        "max_tokens": CEILING,
        "system": SYSTEM,
        "tools": TOOLS,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>Be concise.</system-reminder>"},
                    {"type": "text", "text": task, "cache_control": {"type": "ephemeral"}},
                ],
            }
        ],
        "thinking": {"type": "adaptive"},
        "metadata": {"user_id": '{"device_id":"dev-1","account_uuid":"","session_id":"s"}'},
    }


def agent_headers(agent: int) -> dict[str, str]:
    return {
        "anthropic-beta": BETAS,
        "x-app": "cli",
        "user-agent": "claude-cli/2.1.328 (external, sdk-cli)",
        "x-claude-code-session-id": f"00000000-0000-4000-8000-{agent:012d}",
    }


def task(agent: int, turn: int = 0) -> str:
    return f"Sub-agent {agent}, turn {turn}: find and fix the flaky test in module {agent}."


def opus_worst(gw: GatewayHarness, ceiling: int = CEILING) -> int:
    """A sixteen-agent turn's worst case, as the gateway prices it: the input's upper bound
    at the 5-minute cache-write rate (the body has cache_control), the whole ceiling."""
    route = gw.gateway.models.get(OPUS)
    assert route is not None
    assert route.price is not None
    body = agent_body(task(AGENTS))
    count = tokens.count_anthropic_input(OPUS, body)
    worst = worst_case(
        route.price,
        input_tokens=input_upper_bound(count.tokens, route.price.max_input_tokens),
        input_exact=count.exact,
        ceiling=ceiling,
        choices=1,
        cache_write=True,
        cache_write_1h=False,
    )
    return worst.amount(Unit.NANOS, ceiling)


def opus_cost(record: RequestRecord) -> int:
    """What the simulator billed, at Opus 4.1's list prices."""
    written = record.cache_write_input_tokens
    uncached = record.input_tokens - record.cached_input_tokens - written
    return (
        uncached * OPUS_IN
        + record.cached_input_tokens * OPUS_READ
        + written * OPUS_WRITE
        + record.output_tokens * OPUS_OUT
    )


@contextmanager
def gateway(
    tmp_path: Path, budgets: list[dict[str, Any]], wait_s: float
) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["models"][OPUS] = {"provider": "anthropic"}
        data["budgets"] = budgets
        data["budget_settings"] = {"admission_wait_s": wait_s, "admission_queue_max": 64}

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


class Counter:
    """An httpx event hook counting the HTTP requests one client sent (retries included)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, _request: object) -> None:
        self.count += 1


def agents_at_once(gw: GatewayHarness, secret: str, turn: int) -> list[tuple[int, Any]]:
    """Sixteen Claude-Code-shaped streamed turns, one client each with the SDK's default
    retries, released together: (requests the client sent, final message or the error)."""
    barrier = threading.Barrier(AGENTS)

    def run(agent: int) -> tuple[int, Any]:
        counter = Counter()
        with gw.sdk_client("anthropic", secret, {"request": [counter]}) as client:
            assert client.max_retries == 2
            barrier.wait(timeout=30)
            try:
                with client.messages.stream(
                    **agent_body(task(agent, turn)),
                    extra_headers={**agent_headers(agent), **AGENT_SIM},
                    extra_query={"beta": "true"},
                ) as events:
                    outcome: Any = events.get_final_message()
            except anthropic.APIStatusError as error:
                outcome = error
        return counter.count, outcome

    with ThreadPoolExecutor(max_workers=AGENTS) as pool:
        return list(pool.map(run, range(AGENTS), timeout=120))


def records_by_id(gw: GatewayHarness) -> dict[str, RequestRecord]:
    assert gw.call(gw.sim.wait_idle(10))
    return {record.request_id: record for record in list(gw.sim.records)}


def spent_and_reserved(gw: GatewayHarness, budget: str) -> tuple[int, int]:
    (view,) = gw.call(gw.gateway.budget_service.overview(budget))
    return view.state.spent, view.state.reserved


DAILY = [{"name": "opus-daily", "scope": "user", "match": "dana", "period": "daily",
          "models": ["claude-opus-*"], "limit_usd": "40"}]  # fmt: skip


def test_sixteen_agents_on_forty_dollars_of_opus(tmp_path: Path) -> None:
    with gateway(tmp_path, DAILY, wait_s=30) as gw:
        secret = gw.create_key(name="claude-code", user="dana", service="claude-code")
        key_id = gw.last_key_id
        worst = opus_worst(gw)
        assert AGENTS * worst > LIMIT  # reserved all at once, they would not fit

        # 1. The burst: spent is far below the limit, so nobody is refused.
        results = agents_at_once(gw, secret, turn=0)
        for sent, outcome in results:
            assert not isinstance(outcome, BaseException), repr(outcome)
            assert outcome.stop_reason == "end_turn"
            assert sent == 1  # no refusal hidden behind an SDK retry
        rows = gw.ledger(key_id)
        assert len(rows) == AGENTS
        assert gw.ledger(key_id, blocked=True) == []
        records = records_by_id(gw)
        for row in rows:
            record = records[row.upstream_request_id or ""]
            assert record.query == "beta=true"
            assert row.session_id is not None
            assert row.input_tokens == record.input_tokens
            assert row.cached_input_tokens == CACHED
            assert row.output_tokens == record.output_tokens == 300
            assert row.cost_nanos == opus_cost(record)
            assert record.body["max_tokens"] == row.output_ceiling  # clamped or whole
            assert 256 <= row.output_ceiling <= CEILING
        burst = sum(row.cost_nanos for row in rows)
        assert burst * 10 < LIMIT  # "far below": under a tenth of the budget
        assert spent_and_reserved(gw, "opus-daily") == (burst, 0)

        # 2. Spend it for real: long answers, one after another, until it refuses.
        driver = Counter()
        refusal: anthropic.APIStatusError | None = None
        with gw.sdk_client("anthropic", secret, {"request": [driver]}, max_retries=0) as client:
            for turn in range(1, 40):
                try:
                    client.messages.create(
                        **agent_body(task(0, turn)),
                        extra_headers={**agent_headers(0), "x-sim-output-tokens": "31000"},
                        timeout=60,  # the SDK wants an explicit timeout for 32,000 unstreamed
                    )
                except anthropic.APIStatusError as error:
                    refusal = error
                    break
        assert isinstance(refusal, anthropic.PaymentRequiredError), repr(refusal)
        spent, reserved = spent_and_reserved(gw, "opus-daily")
        assert reserved == 0
        least = opus_worst(gw, 256)  # the smallest answer the budget would still clamp to
        assert spent <= LIMIT < spent + least  # really spent: not even that fits

        # 3. Sixteen agents now: each sends ONE request and is told not to retry.
        upstream_before = len(gw.sim.records)
        blocked_before = len(gw.ledger(key_id, blocked=True))
        results = agents_at_once(gw, secret, turn=99)
        for sent, outcome in results:
            assert isinstance(outcome, anthropic.PaymentRequiredError), repr(outcome)
            assert outcome.status_code == 402
            assert outcome.body["error"]["type"] == "billing_error"
            assert outcome.response.headers["x-should-retry"] == "false"
            assert "Budget exhausted" in outcome.body["error"]["message"]
            assert "(opus-daily, daily)" in outcome.body["error"]["message"]
            assert sent == 1
        assert len(gw.sim.records) == upstream_before  # nothing reached the provider
        blocks = gw.ledger(key_id, blocked=True)
        assert len(blocks) == blocked_before + AGENTS
        assert {row.blocked_by for row in blocks} == {"opus-daily"}
        total = sum(row.cost_nanos for row in gw.ledger(key_id))
        assert spent_and_reserved(gw, "opus-daily") == (total, 0)
        assert total <= LIMIT


BUSY = [{"name": "opus-busy", "scope": "user", "match": "erin", "period": "daily",
         "models": ["claude-opus-*"], "limit_usd": "3"}]  # fmt: skip


def eventually(probe: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_room_held_in_flight_past_the_wait_is_a_retryable_429(tmp_path: Path) -> None:
    with gateway(tmp_path, BUSY, wait_s=0.3) as gw:
        secret = gw.create_key(name="claude-code", user="erin", service="claude-code")
        key_id = gw.last_key_id
        worst, least = opus_worst(gw), opus_worst(gw, 256)
        limit = 3_000_000_000
        assert worst <= limit < worst + least  # one fits; a second does not, not even clamped
        assert least <= limit  # ... but would, were the first settled: room is only held

        slow = {**AGENT_SIM, "x-sim-output-tokens": "3000", "x-sim-chunk-delay-ms": "50"}
        with (
            gw.sdk_client("anthropic", secret, max_retries=0) as holder,
            gw.sdk_client("anthropic", secret, max_retries=0) as other,
        ):
            stream = holder.messages.create(
                **agent_body(task(1)),
                stream=True,
                extra_headers={**agent_headers(1), **slow},
                extra_query={"beta": "true"},
            )
            events = iter(stream)
            assert next(events).type == "message_start"  # admitted: its worst case is held
            assert spent_and_reserved(gw, "opus-busy") == (0, worst)
            before = len(gw.sim.records)
            with pytest.raises(anthropic.RateLimitError) as caught:
                other.messages.create(
                    **agent_body(task(2)),
                    stream=True,
                    extra_headers=agent_headers(2),
                    extra_query={"beta": "true"},
                )
            assert len(gw.sim.records) == before
            stream.close()  # the holder goes away: its stream is settled at what it got

        error = caught.value
        assert error.status_code == 429
        assert error.body["error"]["type"] == "rate_limit_error"
        assert error.response.headers["x-should-retry"] == "true"
        assert 1 <= int(error.response.headers["retry-after"]) <= 60
        message = error.body["error"]["message"]
        assert "reserved by requests in flight (1 of them in this gateway)" in message
        assert "Budget exhausted" not in message
        blocks = gw.ledger(key_id, blocked=True)
        assert [row.blocked_by for row in blocks] == ["opus-busy"]
        assert eventually(lambda: spent_and_reserved(gw, "opus-busy")[1] == 0)
        (row,) = gw.ledger(key_id)
        assert row.client_disconnected
        assert 0 < row.cost_nanos <= worst
