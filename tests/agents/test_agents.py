"""The real coding agents through spendgate: Claude Code and Codex CLI, unmodified.

Each agent runs headless (``claude -p``, ``codex exec``) in a loopback-only network
namespace shared with an in-process gateway and the simulator (`agentkit`). The gateway has
a manual clock: nothing here waits for a window to pass except the agents' own
``retry-after`` sleeps (1 s). Every key below belongs to a user of its own, so each
scenario has its own budget, cap, limit, loop counter and breaker:

* basic turn: the agent prints the simulator's text; one ledger row, the right model and
  the agent's own session id;
* budget refusal and request cap: one request, and the agent prints spendgate's message;
* rate-limit wait: the agent waits out a ``retry-after`` and then gets its answer;
* loop, breaker, clamp: what each agent does today (see each test).

The agents ask for models of the catalog explicitly (``--model``, ``model =``): their own
defaults are not in it yet.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from agentkit import AgentRun, Agents, agent_world
from spendgate.clock import ManualClock
from spendgate.domain.ledger import LedgerRow
from spendgate.simulator.tokens import generate_text, prompt_seed

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
CLAUDE_MODEL = "claude-haiku-4-5"
CODEX_MODEL = "gpt-4o-mini"
LONG_ANSWER = {"x-sim-output-tokens": "50000"}  # the simulator answers up to the ceiling
FAILING = {"x-sim-status": "500"}
WINDOW_PASSES = 1.1  # a 1/s window plus one bucket (a tenth of it): the limit has room again


CLAUDE_DEFAULT = "claude-opus-5-5"  # what Claude Code 2.1.328 asks for without --model
CODEX_DEFAULT = "gpt-6.1-sol"  # Codex 0.169.0's default model


def configure(data: dict[str, Any]) -> None:
    data["server"]["max_body_bytes"] = 4_000_000  # Claude Code sends ~90 KB, Codex ~40 KB
    data["models"][CLAUDE_DEFAULT] = {"provider": "anthropic"}  # priced by the catalog
    data["models"][CODEX_DEFAULT] = {"provider": "openai"}
    data["budgets"] = [
        {
            "name": "broke",
            "scope": "user",
            "match": "broke",
            "limit_usd": "0.000001",
            "period": "daily",
        },
        # Room for Claude Code's first request, clamped to a few thousand tokens, but not
        # for the continuation it sends after a max_tokens stop (the whole input again).
        {
            "name": "tight-claude",
            "scope": "user",
            "match": "tight-claude",
            "limit_usd": "0.06",
            "period": "daily",
        },
        {
            "name": "tight-codex",
            "scope": "user",
            "match": "tight-codex",
            "limit_usd": "0.000001",  # raised by the test to what the request needs
            "period": "daily",
        },
    ]
    data["request_caps"] = [{"scope": "user", "match": "capped", "max_input_tokens": 100}]
    data["limits"] = [
        {"name": f"paced-{agent}", "scope": "user", "match": f"paced-{agent}", "requests": "1/s"}
        for agent in ("claude", "codex")
    ] + [
        {"name": f"hourly-{agent}", "scope": "user", "match": f"hourly-{agent}", "requests": "1/h"}
        for agent in ("claude", "codex")
    ]
    data["runaway"] = {
        "loop_max_repeats": 1,
        "loop_window_s": 60,
        "breaker_failures": 1,
        "breaker_cooldown_s": 1,
    }


@dataclass
class World:
    gw: Any
    agents: Agents
    clock: ManualClock
    work: Path

    def key(self, user: str) -> tuple[str, str]:
        secret = self.gw.create_key(name=user, user=user)
        return secret, self.gw.last_key_id

    def rows(self, key_id: str) -> list[LedgerRow]:
        return list(self.gw.ledger(key_id))

    def blocks(self, key_id: str) -> list[LedgerRow]:
        return list(self.gw.ledger(key_id, blocked=True))

    def requests(self, key_id: str) -> int:
        """Requests the agent sent with this key: every one has a row or a block row."""
        return len(self.rows(key_id)) + len(self.blocks(key_id))

    def upstream_calls(self, key_id: str) -> int:
        """Requests that reached the simulator: each has a (non-block) ledger row."""
        return len(self.rows(key_id))

    def wait_for_block(self, key_id: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.blocks(key_id):
            assert time.monotonic() < deadline, "no refusal recorded"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("agents")
    clock = ManualClock(T0)
    with agent_world(tmp, configure=configure, clock=clock) as (gw, agents):
        yield World(gw, agents, clock, tmp / "work")


def answer_text(world: World, row: LedgerRow) -> str:
    """The text the simulator answered ``row``'s request with (its generator is a function
    of the prompt and the number of output tokens)."""
    (record,) = [r for r in world.gw.sim.records if r.request_id == row.upstream_request_id]
    body = record.body
    if "messages" in body:
        seed = prompt_seed(body.get("system"), body.get("messages"))
    else:
        seed = prompt_seed(body.get("instructions"), body.get("input"))
    return "".join(generate_text(seed, record.output_tokens)).strip()


# ====================================================================== Claude Code

Run = Callable[..., AgentRun]


@pytest.fixture
def claude(world: World) -> Run:
    def run(
        secret: str,
        prompt: str,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
        **env: str,
    ) -> AgentRun:
        agents = world.agents
        argv = agents.claude_argv(prompt, CLAUDE_MODEL)
        return agents.run(argv, agents.claude_env(secret, headers, **env), world.work, timeout)

    return run


def test_claude_on_its_default_model_is_served_and_reserved_within_the_models_maximum(
    world: World,
) -> None:
    """Without --model Claude Code asks for its default (claude-opus-5-5) with max_tokens
    128000; the catalog prices it and the reservation stays within the model's maximum
    output (128,000 on this model: the request's own ceiling, unclamped)."""
    secret, key_id = world.key("cc-default")
    agents = world.agents
    argv = agents.claude_argv("say hi", CLAUDE_MODEL)[:-2]  # no --model
    run = agents.run(argv, agents.claude_env(secret), world.work, 60)
    assert run.returncode == 0, run
    rows = world.rows(key_id)
    assert rows
    assert {row.requested_model for row in rows} <= {CLAUDE_DEFAULT, CLAUDE_MODEL}
    main = [row for row in rows if row.requested_model == CLAUDE_DEFAULT]
    assert main, [row.requested_model for row in rows]
    for row in main:
        assert row.status == 200, row.error
        assert row.cost_nanos > 0
        assert row.output_ceiling is not None
        assert row.output_ceiling <= 128_000
    assert answer_text(world, main[-1]) in run.stdout


def test_codex_on_its_default_model_is_served(world: World, codex: Run) -> None:
    secret, key_id = world.key("codex-default")
    agents = world.agents
    home = agents.codex_home("default", CODEX_DEFAULT)
    run = agents.run(agents.codex_argv("say hi"), agents.codex_env(secret, home), world.work, 60)
    assert run.returncode == 0, run
    (row,) = world.rows(key_id)
    assert (row.requested_model, row.status) == (CODEX_DEFAULT, 200)
    assert row.cost_nanos > 0
    assert answer_text(world, row) in run.stdout


def test_claude_basic_turn_prints_the_answer_and_leaves_one_row(world: World, claude: Run) -> None:
    secret, key_id = world.key("cc-basic")
    run = claude(secret, "say hi")
    assert run.returncode == 0, run
    (row,) = world.rows(key_id)
    assert row.status == 200
    assert (row.requested_model, row.served_model) == (CLAUDE_MODEL, CLAUDE_MODEL)
    assert row.streamed
    assert row.output_ceiling == 32000  # Claude Code's own max_tokens, unclamped
    assert row.input_tokens > 5000  # its system prompt and tools
    assert row.session_id  # x-claude-code-session-id
    (record,) = [r for r in world.gw.sim.records if r.request_id == row.upstream_request_id]
    assert record.headers["x-claude-code-session-id"] == row.session_id
    assert answer_text(world, row) in run.stdout
    assert row.cost_nanos > 0
    assert not world.blocks(key_id)


def test_claude_budget_refusal_is_one_request_with_spendgates_message(
    world: World, claude: Run
) -> None:
    secret, key_id = world.key("broke")
    run = claude(secret, "say hi")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 1
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (402, "broke")
    assert "API Error: 402 Budget exhausted for user 'broke' (broke, daily)" in run.stdout
    assert "It resets at 2026-12-08T00:00:00+00:00" in run.stdout


def test_claude_waits_out_a_rate_limit_and_answers(world: World, claude: Run) -> None:
    secret, key_id = world.key("paced-claude")
    assert claude(secret, "first").returncode == 0
    agents = world.agents
    second = agents.start(
        agents.claude_argv("second", CLAUDE_MODEL), agents.claude_env(secret), world.work
    )
    world.wait_for_block(key_id)  # refused: 429, retry-after: 1
    world.clock.advance(WINDOW_PASSES)  # while Claude Code sleeps
    run = second.finish()
    assert run.returncode == 0, run
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (429, "paced-claude:requests/s")
    assert [r.status for r in world.rows(key_id)] == [200, 200]
    assert answer_text(world, world.rows(key_id)[-1]) in run.stdout


def test_claude_long_rate_limit_is_one_request_with_spendgates_message(
    world: World, claude: Run
) -> None:
    """Room only in an hour: 429 rate_limit_error, x-should-retry: false, no retry-after."""
    secret, key_id = world.key("hourly-claude")
    assert claude(secret, "first").returncode == 0
    run = claude(secret, "second")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 2
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (429, "hourly-claude:requests/h")
    assert "API Error: Request rejected (429) · Rate limit reached for user" in run.stdout


def test_claude_request_cap_is_one_request_with_spendgates_message(
    world: World, claude: Run
) -> None:
    """A request cap is a 402 billing_error in the Anthropic dialect: on 413
    request_too_large Claude Code printed its own "Request too large (max 32MB)" instead."""
    secret, key_id = world.key("capped")
    run = claude(secret, "say hi")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 1
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (402, "request-cap:user:capped")
    assert "API Error: 402 This request has" in run.stdout
    assert "over the limit of 100 per request for user 'capped'" in run.stdout
    assert "Request too large" not in run.output


def test_claude_loop_is_refused_after_one_request_with_spendgates_message(
    world: World, claude: Run
) -> None:
    """Claude Code's bodies repeat exactly for the same prompt in the same folder: the
    second identical run is a loop (loop_max_repeats: 1)."""
    secret, key_id = world.key("cc-loop")
    assert claude(secret, "say hi again").returncode == 0
    run = claude(secret, "say hi again")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 2  # the repeat was sent once, not retried
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (429, "loop-detection")
    assert "API Error: Request rejected (429) · Loop detected" in run.stdout


def test_claude_breaker_stops_the_agent_with_spendgates_message(world: World, claude: Run) -> None:
    """An upstream 500 (relayed; Claude Code retries it), then the open breaker's 529
    overloaded_error with x-should-retry: false, which Claude Code shows at once: 2
    requests, 1 upstream call. (A 503 it retried whatever the header said: with
    CLAUDE_CODE_MAX_RETRIES=2, 3 requests, and 7 or more in 45 s with its defaults.)"""
    secret, key_id = world.key("cc-breaker")
    run = claude(secret, "say hi", headers=FAILING, CLAUDE_CODE_MAX_RETRIES="2")
    assert run.returncode == 1, run
    assert world.upstream_calls(key_id) == 1
    assert [r.status for r in world.rows(key_id)] == [500]
    blocks = world.blocks(key_id)
    assert [(b.status, b.blocked_by) for b in blocks] == [(529, "circuit-breaker")]
    assert world.requests(key_id) == 2
    assert "The upstream for 'claude-haiku-4-5' failed 1 times" in run.stdout


def test_claude_clamp_that_bites_ends_the_turn_with_the_paid_answer(
    world: World, claude: Run
) -> None:
    """The first request is clamped to what the budget affords and the answer stops at
    that ceiling; spendgate tells Claude Code the turn ended (stop_reason end_turn, the
    clamp in x-spendgate-output-clamped), so it prints the answer that was paid for and
    sends nothing more. (Told "max_tokens", it sent "Output token limit hit. Resume
    directly..." with the whole context again, which the budget could not afford: the user
    paid for the clamped answer and saw only the 402.)"""
    secret, key_id = world.key("tight-claude")
    run = claude(secret, "write an essay", headers=LONG_ANSWER)
    assert run.returncode == 0, run
    (row,) = world.rows(key_id)
    assert row.clamped_from == 32000
    assert row.output_ceiling is not None
    assert 256 <= row.output_ceiling < 32000
    assert row.output_tokens == row.output_ceiling  # the answer ran into the clamp
    assert row.cost_nanos > 0
    assert world.requests(key_id) == 1  # no continuation
    assert not world.blocks(key_id)
    assert answer_text(world, row)[:200] in run.stdout  # what was paid for is shown


# ====================================================================== Codex


@pytest.fixture
def codex(world: World) -> Run:
    def run(
        secret: str,
        prompt: str,
        name: str,
        headers: dict[str, str] | None = None,
        timeout: float = 60,
        **provider: Any,
    ) -> AgentRun:
        agents = world.agents
        home = agents.codex_home(name, CODEX_MODEL, headers, **provider)
        return agents.run(
            agents.codex_argv(prompt), agents.codex_env(secret, home), world.work, timeout
        )

    return run


def test_codex_basic_turn_prints_the_answer_and_leaves_one_row(world: World, codex: Run) -> None:
    secret, key_id = world.key("codex-basic")
    run = codex(secret, "say hi", "basic")
    assert run.returncode == 0, run
    (row,) = world.rows(key_id)
    assert row.status == 200
    assert (row.requested_model, row.served_model, row.surface) == (
        CODEX_MODEL,
        CODEX_MODEL,
        "openai.responses",
    )
    assert row.streamed
    assert row.session_id  # Codex's session-id header
    assert f"session id: {row.session_id}" in run.stderr
    assert answer_text(world, row) in run.stdout
    assert not world.blocks(key_id)


def test_codex_budget_refusal_is_one_request_with_spendgates_message(
    world: World, codex: Run
) -> None:
    """Codex gets a budget refusal as 400 (same body): one request, and it prints our
    message. The 429 insufficient_quota that OpenAI clients get made it print its own
    "Quota exceeded. Check your plan and billing details." instead."""
    secret, key_id = world.key("broke")
    run = codex(secret, "say hi", "broke")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 1
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (400, "broke")
    assert "Budget exhausted for user 'broke' (broke, daily)" in run.stderr
    assert "It resets at 2026-12-08T00:00:00+00:00" in run.stderr
    assert "Quota exceeded" not in run.output


def test_codex_waits_out_a_rate_limit_and_answers(world: World, codex: Run) -> None:
    secret, key_id = world.key("paced-codex")
    assert codex(secret, "first", "paced").returncode == 0
    agents = world.agents
    second = agents.start(
        agents.codex_argv("second"),
        agents.codex_env(secret, agents.home / "codex-paced"),
        world.work,
    )
    world.wait_for_block(key_id)
    world.clock.advance(WINDOW_PASSES)
    run = second.finish()
    assert run.returncode == 0, run
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (429, "paced-codex:requests/s")
    assert [r.status for r in world.rows(key_id)] == [200, 200]
    assert answer_text(world, world.rows(key_id)[-1]) in run.stdout


def test_codex_long_rate_limit_is_one_request_with_spendgates_message(
    world: World, codex: Run
) -> None:
    """Room only in an hour: x-should-retry: false, so Codex gets a 400. (A 429 without
    retry-after: "exceeded retry limit, last status: 429", our message lost.)"""
    secret, key_id = world.key("hourly-codex")
    assert codex(secret, "first", "hourly").returncode == 0
    run = codex(secret, "second", "hourly")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 2
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (400, "hourly-codex:requests/h")
    assert "Rate limit reached for user 'hourly-codex'" in run.stderr
    assert "exceeded retry limit" not in run.output


def test_codex_request_cap_is_one_request_with_spendgates_message(world: World, codex: Run) -> None:
    """A request cap goes to Codex as 400 request_cap_exceeded: one request, our message.
    As a 413 Codex retried it five times, x-should-retry: false notwithstanding."""
    secret, key_id = world.key("capped")
    run = codex(secret, "say hi", "capped")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 1
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (400, "request-cap:user:capped")
    assert "over the limit of 100 per request for user 'capped'" in run.stderr
    assert "Reconnecting" not in run.output


def test_codex_repeats_are_a_loop_refused_after_one_request(world: World, codex: Run) -> None:
    """Every Codex request carries fresh ids, turn ids, timestamps and client metadata;
    the loop fingerprint ignores them (docs/limits.md), so the second identical ``codex
    exec`` run is a loop: one request, refused as 400 (Codex cannot retry it), spendgate's
    message printed. (Before, both runs were served: no two Codex bodies were equal.)"""
    secret, key_id = world.key("codex-loop")
    assert codex(secret, "say hi again", "loop").returncode == 0
    run = codex(secret, "say hi again", "loop")
    assert run.returncode == 1, run
    assert world.requests(key_id) == 2
    assert [r.status for r in world.rows(key_id)] == [200]
    (block,) = world.blocks(key_id)
    assert (block.status, block.blocked_by) == (400, "loop-detection")
    assert "Loop detected" in run.stderr


def test_codex_breaker_shows_spendgates_message_at_once(world: World, codex: Run) -> None:
    """The upstream 500 (Codex retries it once here), then the open breaker's refusal with
    x-should-retry: false, sent to Codex as 400: it stops and prints the message. (As a 503
    with retry-after Codex retried request_max_retries x stream_max_retries times: 4
    requests here, 30 with its defaults.)"""
    secret, key_id = world.key("codex-breaker")
    run = codex(secret, "say hi", "breaker", FAILING, request_max_retries=1, stream_max_retries=1)
    assert run.returncode == 1, run
    assert world.upstream_calls(key_id) == 1
    blocks = world.blocks(key_id)
    assert [(b.status, b.blocked_by) for b in blocks] == [(400, "circuit-breaker")]
    assert world.requests(key_id) == 2
    assert "The upstream for 'gpt-4o-mini' failed 1 times in a row" in run.stderr


def test_codex_clamp_that_bites_ends_the_turn_with_the_paid_answer(
    world: World, codex: Run
) -> None:
    """Codex sends no max_output_tokens; spendgate sends the clamped ceiling and the
    answer stops there. Told response.incomplete (max_output_tokens), Codex exited 1 with
    "Incomplete response returned" and an empty stdout: the user paid for an answer never
    shown. spendgate tells it response.completed instead: it prints the answer."""
    secret, key_id = world.key("tight-codex")
    assert codex(secret, "write an essay", "tight", LONG_ANSWER).returncode == 1
    (probe,) = world.blocks(key_id)  # refused: what does the smallest answer need?
    needs = re.search(r"needs at least \$([0-9]+\.[0-9]+)", probe.error or "")
    assert needs is not None, probe.error
    room = Decimal(needs.group(1)) + Decimal("0.0012")  # ~2,000 gpt-4o-mini output tokens
    world.gw.call(world.gw.gateway.budget_service.set_limit("tight-codex", str(room), None))
    run = codex(secret, "write an essay", "tight", LONG_ANSWER)
    assert run.returncode == 0, run
    (row,) = world.rows(key_id)
    assert row.clamped_from is not None
    assert row.output_ceiling is not None
    assert 256 <= row.output_ceiling < row.clamped_from
    assert row.output_tokens == row.output_ceiling
    assert row.cost_nanos > 0
    assert "Incomplete response" not in run.output
    assert answer_text(world, row)[:200] in run.stdout
