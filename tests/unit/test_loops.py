"""Loop escalation and loop fingerprints, pure: how long a detected loop stays blocked
(doubling per repeat detection, capped, strikes forgotten after a quiet period), and which
fields of real clients' bodies (Codex, Claude Code) a fingerprint ignores, computed the
same on the event loop and in a worker process (large bodies)."""

from __future__ import annotations

import asyncio
import copy
import os
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from spendgate.config.build import loop_policy
from spendgate.config.schema import RunawayConfig
from spendgate.dialects.offloaded import fingerprint_of
from spendgate.domain.fingerprint import fingerprint
from spendgate.domain.loops import KEY_WIDE, LoopBlock, LoopPolicy, loop_id, loop_message
from spendgate.services.offload import LARGE_BODY_BYTES, Offload

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
POLICY = LoopPolicy(
    cooldown=timedelta(seconds=60),
    cooldown_max=timedelta(seconds=1800),
    forget_after=timedelta(seconds=1800),
)


def strike(previous: LoopBlock | None, at_s: float, policy: LoopPolicy = POLICY) -> LoopBlock:
    return policy.strike(
        previous,
        key_id="key_1",
        fingerprint="f" * 24,
        model="gpt-4o",
        now=T0 + timedelta(seconds=at_s),
    )


# ============================================================================ policy


def test_the_cool_down_doubles_per_repeat_detection_up_to_the_cap() -> None:
    assert [POLICY.cooldown_for(n).total_seconds() for n in range(1, 8)] == [
        60,
        120,
        240,
        480,
        960,
        1800,  # 1920 capped
        1800,
    ]
    assert POLICY.cooldown_for(10_000) == timedelta(seconds=1800)  # no overflow


def test_strikes_grow_while_blocked_loops_stay_and_are_forgotten_when_quiet() -> None:
    first = strike(None, 0)
    assert (first.strikes, first.until) == (1, T0 + timedelta(seconds=60))
    assert first.blocks(T0 + timedelta(seconds=59.999))
    assert not first.blocks(T0 + timedelta(seconds=60))
    # detected again while still blocked (another process, same moment): unchanged
    assert strike(first, 30) is first
    second = strike(first, 70)
    assert (second.strikes, second.until) == (2, T0 + timedelta(seconds=70 + 120))
    third = strike(second, 190 + 1799)  # quiet for just under forget_after: still counts
    assert third.strikes == 3
    fresh = strike(third, (third.until - T0).total_seconds() + 1800)  # quiet long enough
    assert fresh.strikes == 1
    assert fresh.until - fresh.detected_at == timedelta(seconds=60)


def test_a_key_with_n_loops_blocked_at_once_escalates_when_configured() -> None:
    escalating = LoopPolicy(POLICY.cooldown, POLICY.cooldown_max, POLICY.forget_after, 2)

    def block(key_id: str, fingerprint: str, at_s: float) -> LoopBlock:
        return escalating.strike(
            None,
            key_id=key_id,
            fingerprint=fingerprint,
            model="m",
            now=T0 + timedelta(seconds=at_s),
        )

    now = T0 + timedelta(seconds=30)
    one = block("key_1", "a", 0)
    assert not escalating.escalates([one], "key_1", now)
    held = [one, block("key_1", "b", 10), block("key_2", "c", 10)]
    assert escalating.escalates(held, "key_1", now)
    assert not escalating.escalates(held, "key_2", now)  # per key
    assert not escalating.escalates(held, "key_1", T0 + timedelta(seconds=65))  # one ended
    assert not POLICY.escalates(held, "key_1", now)  # 0: off
    wide = block("key_1", KEY_WIDE, 10)
    assert wide.key_wide
    assert not escalating.escalates([one, wide], "key_1", now)  # a key block is no loop
    message = loop_message(wide, now, wide.until.isoformat())
    assert "every request of it is blocked until" in message
    assert f"spendgate loops release {wide.id}" in message


def test_the_message_says_how_long_and_why() -> None:
    block = strike(strike(None, 0), 70)
    now = T0 + timedelta(seconds=100)
    message = loop_message(block, now, block.until.isoformat(), 4, 60)
    assert message.startswith("Loop detected: this key sent the same request 4 times within 60 s")
    assert f"Blocked until {block.until.isoformat()} (1.5 min from now)" in message
    assert "repeat detection 2" in message
    assert f"spendgate loops release {block.id}" in message
    assert block.id == loop_id("key_1", "f" * 24)
    assert len(block.id) == 16
    assert loop_id("key_2", "f" * 24) != block.id


def test_the_config_defaults_and_checks_the_cool_downs() -> None:
    default = loop_policy(RunawayConfig(loop_max_repeats=3, loop_window_s=90))
    assert default == LoopPolicy(
        cooldown=timedelta(seconds=90),  # the window
        cooldown_max=timedelta(hours=1),
        forget_after=timedelta(hours=1),  # the longest block
    )
    assert loop_policy(RunawayConfig(loop_window_s=90)) is None  # detection off
    chosen = RunawayConfig(
        loop_max_repeats=3,
        loop_cooldown_s=30,
        loop_cooldown_max_s=600,
        loop_forget_s=0,
        loop_escalate_after=2,
    )
    assert loop_policy(chosen) == LoopPolicy(
        timedelta(seconds=30), timedelta(seconds=600), timedelta(0), escalate_after=2
    )
    with pytest.raises(ValidationError, match="shorter than the first cool-down"):
        RunawayConfig(loop_max_repeats=3, loop_window_s=7200, loop_cooldown_max_s=3600)
    long_window = loop_policy(RunawayConfig(loop_max_repeats=3, loop_window_s=7200))
    assert long_window is not None
    assert long_window.cooldown == long_window.cooldown_max == timedelta(hours=2)


# ======================================================================= fingerprints


def codex_body(text: str, *, pad: int = 0) -> dict[str, Any]:
    """What Codex CLI 0.169 sends (CLIENTS.md §8.2, §12.7): fresh ids, turn id, creation
    time and client metadata on every call. ``pad``: characters of instructions, to make
    a body large enough for the worker path."""
    turn = str(uuid.uuid4())
    return {
        "model": "gpt-4o",
        "instructions": "You are Codex, a coding agent." + "x" * pad,
        "input": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "developer",
                "content": [{"type": "input_text", "text": "<environment_context/>"}],
            },
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "user",
                "create_time": datetime.now(UTC).timestamp(),
                "content": [{"type": "input_text", "text": text}],
            },
            {
                "type": "function_call",
                "id": f"fc_{uuid.uuid4().hex}",
                "call_id": f"call_{uuid.uuid4().hex}",
                "name": "shell",
                "arguments": '{"command": ["ls"]}',
            },
            {
                "type": "function_call_output",
                "call_id": f"call_{uuid.uuid4().hex}",
                "output": "README.md",
            },
        ],
        "tools": [
            {
                "type": "function",
                "name": "shell",
                "parameters": {
                    "type": "object",
                    "properties": {"id": {"type": "string"}, "command": {"type": "array"}},
                },
            }
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "reasoning": {"summary": "auto"},
        "store": False,
        "stream": True,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": str(uuid.uuid4()),
        "client_metadata": {"turn_id": turn, "x-codex-turn-metadata": {"turn": turn}},
        "turn_id": turn,
        "create_time": datetime.now(UTC).isoformat(),
    }


def claude_code_body(text: str) -> dict[str, Any]:
    session = str(uuid.uuid4())
    user_id = {"device_id": "d" * 64, "account_uuid": "", "session_id": session}
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 32000,
        "stream": True,
        "system": [
            {"type": "text", "text": "You are Claude Code."},
            {"type": "text", "text": "cwd: /work", "cache_control": {"type": "ephemeral"}},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": text, "cache_control": {"type": "ephemeral"}}],
            },
            {
                "role": "assistant",
                "content": [
                    {
                        "type": "tool_use",
                        "id": f"toolu_{uuid.uuid4().hex}",
                        "name": "Read",
                        "input": {"id": 7, "file_path": "/work/a.py"},
                    }
                ],
            },
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": f"toolu_{uuid.uuid4().hex}",
                        "content": "print('hi')",
                    }
                ],
            },
        ],
        "metadata": {"user_id": orjson.dumps(user_id).decode()},
    }


def test_codex_bodies_differing_only_in_volatile_fields_have_one_fingerprint() -> None:
    first, second = codex_body("fix the test"), codex_body("fix the test")
    assert first != second  # every id, time and cache key differs
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(codex_body("fix the other test")) != fingerprint(first)
    # what is asked still counts: instructions, tools, the model, a tool's arguments
    for change in (
        lambda b: b.update(instructions="Be terse."),
        lambda b: b.update(model="gpt-4o-mini"),
        lambda b: b["tools"][0]["parameters"]["properties"].pop("id"),
        lambda b: b["input"][2].update(arguments='{"command": ["pwd"]}'),
        lambda b: b["input"][3].update(output="Makefile"),
        lambda b: b["input"].pop(0),
    ):
        changed = copy.deepcopy(second)
        change(changed)
        assert fingerprint(changed) != fingerprint(first)


def test_claude_code_bodies_differing_in_session_and_cache_marks_have_one_fingerprint() -> None:
    first, second = claude_code_body("explain a.py"), claude_code_body("explain a.py")
    assert first["metadata"] != second["metadata"]
    del second["messages"][0]["content"][0]["cache_control"]  # a moved cache breakpoint
    second["stream"] = False
    assert fingerprint(first) == fingerprint(second)
    assert fingerprint(claude_code_body("explain b.py")) != fingerprint(first)
    changed = claude_code_body("explain a.py")
    changed["messages"][1]["content"][0]["input"]["id"] = 8  # a tool's argument named id
    assert fingerprint(changed) != fingerprint(first)
    changed = claude_code_body("explain a.py")
    changed["system"][1]["text"] = "cwd: /elsewhere"
    assert fingerprint(changed) != fingerprint(first)


def test_the_worker_path_fingerprints_as_the_event_loop_does() -> None:
    """A body of 512 KiB or more is fingerprinted in a worker process from its bytes
    (`spendgate.pipeline.bodywork`): the same answer as the event loop's, volatile fields
    ignored alike."""
    large = [codex_body("fix the test", pad=LARGE_BODY_BYTES) for _ in range(2)]
    other = codex_body("fix the other test", pad=LARGE_BODY_BYTES)
    raws = [orjson.dumps(body) for body in (*large, other)]
    assert all(len(raw) >= LARGE_BODY_BYTES for raw in raws)
    offload = Offload(workers=1)

    async def in_worker() -> tuple[int, list[str]]:
        pid = await offload.run(os.getpid)
        return pid, [await offload.run(fingerprint_of, raw) for raw in raws]

    try:
        pid, worker = asyncio.run(in_worker())
    finally:
        offload.close()
    assert pid != os.getpid()  # it ran in a worker process
    inline = [fingerprint(orjson.loads(raw)) for raw in raws]
    assert worker == inline
    assert worker[0] == worker[1] != worker[2]
    small = [codex_body("fix the test"), codex_body("fix the test")]
    assert fingerprint_of(orjson.dumps(small[0])) == fingerprint(small[1])


@pytest.mark.parametrize("field", ["stream", "stream_options", "user", "service_tier"])
def test_delivery_fields_are_ignored(field: str) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
    assert fingerprint({**body, field: {"x": 1}}) == fingerprint(body)
