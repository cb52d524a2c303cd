"""A detected loop stays stopped: escalation, release and durability, against the real
SDKs, with an injected clock.

With ``loop_max_repeats: 3`` per 60 s, ``loop_cooldown_max_s: 1800`` (the first block is
the window, 60 s, doubling per repeat detection):

* a loop of 400 identical requests, one every 6 s (40 minutes), gets exactly 18 served:
  3, then a block of 60 s, 3, 120 s, 3, 240 s, 3, 480 s, 3, 960 s, 3, then 1800 s (the
  cap) outlasting the run. While blocked, nothing of it is served; a changed request is.
* an operator releases a block (admin API, CLI): the next send is served at once.
* blocks live in the database: a restarted gateway still refuses the loop.
* a Codex loop whose bodies differ only in fresh ids, turn ids, times and client metadata
  is one loop, on the event loop and (bodies of 512 KiB and more) in a worker process.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from e2e.process import http_request, write_config
from harness import GatewayHarness
from spendgate.cli.main import cli
from spendgate.clock import ManualClock
from spendgate.services.offload import LARGE_BODY_BYTES

ADMIN = "sg-admin-loops-test"
MODEL = "gpt-4o-mini"
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
STEP_S = 6
SENDS = 400  # 400 x 6 s = 40 minutes


def configure(data: dict[str, Any]) -> None:
    data["runaway"] = {
        "loop_max_repeats": 3,
        "loop_window_s": 60,
        "loop_cooldown_max_s": 1800,
    }
    data["server"]["max_body_bytes"] = 4 * LARGE_BODY_BYTES


@pytest.fixture(scope="module")
def looped(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayHarness, ManualClock]]:
    clock = ManualClock(T0)
    harness = GatewayHarness(
        tmp_path_factory.mktemp("loops") / "spendgate.db",
        configure=configure,
        clock=clock,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    try:
        yield harness, clock
    finally:
        harness.stop()


def prompt(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def ask(client: openai.OpenAI, text: str) -> str | None:
    """None if served; the refusal's message if refused as a loop."""
    try:
        client.chat.completions.create(model=MODEL, messages=prompt(text), max_tokens=50)
    except openai.RateLimitError as exc:
        refused = exc
    else:
        return None
    assert refused.code == "loop_detected"
    assert refused.response.headers["x-should-retry"] == "false"
    assert "retry-after" not in refused.response.headers
    return refused.message


BLOCKED_UNTIL = re.compile(r"Blocked until (\S+) \(")
DETECTION = re.compile(r"repeat detection (\d+)")


def test_a_400_request_loop_over_40_minutes_stays_stopped_and_escalates(
    looped: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = looped
    start = clock.now()
    key = gw.create_key(name="looping-agent")
    key_id = gw.last_key_id
    client = openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0)
    served: list[int] = []
    detections: list[tuple[int, int, datetime]] = []  # (at, strike, blocked until)
    changed_served = 0
    with client:
        for i in range(SENDS):
            at = i * STEP_S
            clock.set(start + timedelta(seconds=at))
            message = ask(client, "Run the failing test again.")
            if message is None:
                served.append(at)
                continue
            if "times within 60 s" in message:  # this send was the one detected
                until = BLOCKED_UNTIL.search(message)
                strike = DETECTION.search(message)
                assert until is not None, message
                assert strike is not None, message
                detections.append((at, int(strike.group(1)), datetime.fromisoformat(until[1])))
            else:
                assert "while it is blocked as a loop" in message
            if at in (30, 1200):  # meanwhile, a changed request is served
                assert ask(client, f"Something else, at {at} s.") is None
                changed_served += 1

    # 3 served, then a block of 60 s, 3, 120 s, 3, 240 s, 3, 480 s, 3, 960 s, 3, 1800 s
    assert served == [
        *(0, 6, 12),
        *(78, 84, 90),
        *(216, 222, 228),
        *(474, 480, 486),
        *(972, 978, 984),
        *(1950, 1956, 1962),
    ]
    assert len(served) == 18
    cooldowns = [60, 120, 240, 480, 960, 1800]
    assert [(at, strike) for at, strike, _ in detections] == [
        (18, 1),
        (96, 2),
        (234, 3),
        (492, 4),
        (990, 5),
        (1968, 6),
    ]
    for (at, _, until), cooldown in zip(detections, cooldowns, strict=True):
        assert until == start + timedelta(seconds=at + cooldown)
    # after each detection nothing of the loop was served before its block ended
    for at, _, until in detections:
        ends = (until - start).total_seconds()
        assert not [t for t in served if at <= t < ends]
    assert changed_served == 2

    rows = gw.ledger(key_id)
    assert len(rows) == 18 + 2
    blocks = gw.ledger(key_id, blocked=True)
    assert len(blocks) == SENDS - 18
    assert {row.blocked_by for row in blocks} == {"loop-detection"}
    assert {row.status for row in blocks} == {429}
    assert all(row.would_cost_nanos > 0 for row in blocks)  # priced for the record
    assert {row.cost_nanos for row in blocks} == {0}
    print(f"\n400-request loop, 3 repeats/60 s: {len(served)} served, {len(blocks)} refused")

    # the block is listed with its strikes, and ends when the listing says
    listed = http_request("GET", gw.url + "/admin/loops", token=ADMIN)
    assert listed.status == 200
    (entry,) = [b for b in listed.json()["data"] if b["key_id"] == key_id]
    assert entry["strikes"] == 6
    assert entry["blocked"] is True
    assert datetime.fromisoformat(entry["blocked_until"]) == detections[-1][2]


def detect_loop(client: openai.OpenAI, text: str) -> str:
    """Send ``text`` until the loop detector refuses it (the 4th send): its message."""
    for _ in range(3):
        assert ask(client, text) is None
    message = ask(client, text)
    assert message is not None
    assert "repeat detection 1" in message
    return message


def release_id(message: str) -> str:
    found = re.search(r"spendgate loops release ([0-9a-f]{16})", message)
    assert found is not None, message
    return found[1]


def test_an_operator_releases_a_loop_by_the_admin_api(
    looped: tuple[GatewayHarness, ManualClock],
) -> None:
    gw, clock = looped
    key = gw.create_key(name="released-by-api")
    key_id = gw.last_key_id
    with openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0) as client:
        loop_id = release_id(detect_loop(client, "Retry the deploy."))
        clock.advance(10)
        assert ask(client, "Retry the deploy.") is not None  # blocked for 50 s more

        listed = http_request("GET", gw.url + "/admin/loops", token=ADMIN).json()["data"]
        (entry,) = [b for b in listed if b["key_id"] == key_id]
        assert entry["id"] == loop_id
        assert entry["model"] == MODEL
        assert entry["remaining_s"] == 50
        assert http_request("GET", gw.url + "/admin/loops").status == 401  # admin only

        released = http_request("POST", gw.url + f"/admin/loops/{loop_id}/release", token=ADMIN)
        assert released.status == 200, released.body
        assert released.json()["released"] is True
        assert released.json()["strikes"] == 1
        again = http_request("POST", gw.url + f"/admin/loops/{loop_id}/release", token=ADMIN)
        assert again.status == 404
        listed = http_request("GET", gw.url + "/admin/loops?all=true", token=ADMIN).json()["data"]
        assert loop_id not in [b["id"] for b in listed]

        # served at once, and counted afresh: 3 sends before it is detected again, as a
        # first detection (its strikes were forgotten)
        for _ in range(3):
            assert ask(client, "Retry the deploy.") is None
        assert "repeat detection 1" in (ask(client, "Retry the deploy.") or "")
    clock.advance(120)


def test_an_operator_releases_a_loop_by_the_cli(
    looped: tuple[GatewayHarness, ManualClock], tmp_path: Path
) -> None:
    gw, clock = looped
    config = write_config(tmp_path, gw.sim.url, db_path=gw.db_path, configure=configure)
    runner = CliRunner()
    key = gw.create_key(name="released-by-cli")
    key_id = gw.last_key_id
    with openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0) as client:
        loop_id = release_id(detect_loop(client, "Summarise the log again."))

        # the CLI runs on the wall clock, so this injected-clock block shows as ended: --all
        table = runner.invoke(cli, ["loops", "-c", str(config), "--all"])
        assert table.exit_code == 0, table.output
        header, *lines = table.output.splitlines()
        assert header.split()[:4] == ["ID", "KEY", "MODEL", "STRIKES"]
        (line,) = [line for line in lines if line.startswith(loop_id)]
        assert line.split()[:4] == [loop_id, key_id, MODEL, "1"]  # ids in full
        shown = runner.invoke(cli, ["loops", "-c", str(config), "--all", "--json"])
        (entry,) = [b for b in json.loads(shown.output) if b["id"] == loop_id]
        assert entry["key_id"] == key_id

        released = runner.invoke(cli, ["loops", "release", "-c", str(config), loop_id])
        assert released.exit_code == 0, released.output
        assert f"loop {loop_id} released" in released.output
        assert "1 strike(s) forgotten" in released.output
        assert ask(client, "Summarise the log again.") is None  # at once, same clock

        unknown = runner.invoke(cli, ["loops", "release", "-c", str(config), loop_id])
        assert unknown.exit_code != 0
        assert f"no loop block '{loop_id}'" in unknown.output
    clock.advance(120)


def test_a_blocked_loop_stays_blocked_across_a_restart(tmp_path: Path) -> None:
    clock = ManualClock(T0)
    db = tmp_path / "spendgate.db"
    gw = GatewayHarness(db, configure=configure, clock=clock).start()
    try:
        key = gw.create_key(name="restarted")
        with openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0) as client:
            detect_loop(client, "Loop across a restart.")
    finally:
        gw.stop()
    clock.advance(30)
    gw = GatewayHarness(db, configure=configure, clock=clock).start()  # a new process's view
    try:
        with openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0) as client:
            message = ask(client, "Loop across a restart.")
            assert message is not None
            assert "while it is blocked as a loop" in message
            assert "(30 s from now), repeat detection 1" in message
            assert ask(client, "A changed request.") is None
            clock.advance(30)  # the block ends
            assert ask(client, "Loop across a restart.") is None
    finally:
        gw.stop()


def test_a_key_with_two_loops_blocked_at_once_is_blocked_whole(tmp_path: Path) -> None:
    """``loop_escalate_after: 2``: the second loop of a key blocked while its first still is
    blocks every request of the key (even a changed one) for the cool-down; an operator
    releases the key by the id in the message."""

    def escalating(data: dict[str, Any]) -> None:
        configure(data)
        data["runaway"]["loop_escalate_after"] = 2

    clock = ManualClock(T0)
    gw = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=escalating,
        clock=clock,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    try:
        key = gw.create_key(name="two-loops")
        bystander = gw.create_key(name="bystander")
        with (
            openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0) as client,
            openai.OpenAI(api_key=bystander, base_url=gw.openai_base_url, max_retries=0) as other,
        ):
            detect_loop(client, "First loop.")
            assert ask(client, "A changed request.") is None  # one loop: only it is blocked
            clock.advance(10)
            message = detect_loop(client, "Second loop.")
            assert "every request of it is blocked until" in message
            key_id = release_id(message)
            refused = ask(client, "Yet another request.")
            assert refused is not None
            assert "too many requests blocked as loops" in refused
            assert ask(other, "Second loop.") is None  # other keys are not affected
            listed = http_request("GET", gw.url + "/admin/loops", token=ADMIN).json()["data"]
            wide = [b for b in listed if b["key_wide"]]
            assert [(b["id"], b["fingerprint"], b["strikes"]) for b in wide] == [(key_id, "*", 1)]
            released = http_request("POST", gw.url + f"/admin/loops/{key_id}/release", token=ADMIN)
            assert released.status == 200
            assert ask(client, "Yet another request.") is None  # the key is served again
            assert ask(client, "Second loop.") is not None  # its loops stay blocked
    finally:
        gw.stop()


def test_a_block_that_a_reload_no_longer_enforces_is_not_listed_as_blocked(
    tmp_path: Path,
) -> None:
    """A reload that turns loop detection off (``loop_max_repeats: 0``) stops refusing the
    blocked loops, but ``GET /admin/loops`` and ``spendgate loops`` listed them as blocked
    still. Now the blocks in force leave them out, and ``all`` shows them as not enforced;
    turned on again, the stored block is enforced (and listed) again."""

    def loops_off(data: dict[str, Any]) -> None:
        configure(data)
        data["runaway"]["loop_max_repeats"] = 0

    clock = ManualClock(T0)
    gw = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=configure,
        clock=clock,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    try:
        key = gw.create_key(name="loop-then-off")
        on = write_config(tmp_path, gw.sim.url, db_path=gw.db_path, configure=configure)
        off = write_config(
            tmp_path, gw.sim.url, db_path=gw.db_path, configure=loops_off, name="off.yaml"
        )
        gw.gateway.base_dir = tmp_path

        def reload(config: Path) -> None:
            gw.gateway.config_source = str(config)
            answer = http_request("POST", gw.url + "/admin/reload", token=ADMIN)
            assert answer.status == 200, answer.body

        def listed(query: str = "") -> list[dict[str, Any]]:
            answer = http_request("GET", gw.url + "/admin/loops" + query, token=ADMIN)
            assert answer.status == 200, answer.body
            return list(answer.json()["data"])

        with openai.OpenAI(api_key=key, base_url=gw.openai_base_url, max_retries=0) as client:
            loop_id = release_id(detect_loop(client, "Loop, then detection off."))
            (entry,) = listed()
            assert (entry["id"], entry["blocked"], entry["enforced"]) == (loop_id, True, True)

            reload(off)
            assert ask(client, "Loop, then detection off.") is None  # no longer refused
            assert listed() == []
            (entry,) = listed("?all=true")
            assert (entry["id"], entry["blocked"], entry["enforced"]) == (loop_id, False, False)
            runner = CliRunner()
            table = runner.invoke(cli, ["loops", "-c", str(off), "--all"])
            assert table.exit_code == 0, table.output
            (line,) = [line for line in table.output.splitlines() if line.startswith(loop_id)]
            assert line.endswith("not enforced")
            shown = runner.invoke(cli, ["loops", "-c", str(off), "--all", "--json"])
            (entry,) = json.loads(shown.output)
            assert (entry["blocked"], entry["enforced"]) == (False, False)

            reload(on)
            assert ask(client, "Loop, then detection off.") is not None  # blocked again
            assert [entry["id"] for entry in listed()] == [loop_id]
    finally:
        gw.stop()


def codex_body(text: str, pad: int = 0) -> dict[str, Any]:
    """A Codex-shaped Responses body (CLIENTS.md §8.2, §12.7): fresh ids, turn id, creation
    time, client metadata and cache key on every call."""
    turn = str(uuid.uuid4())
    return {
        "model": MODEL,
        "instructions": "You are Codex." + "." * pad,
        "input": [
            {
                "type": "message",
                "id": f"msg_{uuid.uuid4().hex}",
                "role": "user",
                "create_time": datetime.now(UTC).isoformat(),
                "content": [{"type": "input_text", "text": text}],
            }
        ],
        "max_output_tokens": 50,
        "store": False,
        "prompt_cache_key": str(uuid.uuid4()),
        "client_metadata": {"turn_id": turn},
    }


@pytest.mark.parametrize("pad", [0, LARGE_BODY_BYTES], ids=["event-loop", "worker"])
def test_a_codex_loop_is_one_loop_whatever_its_ids(
    looped: tuple[GatewayHarness, ManualClock], pad: int
) -> None:
    gw, clock = looped
    key = gw.create_key(name=f"codex-{pad}")
    sent: list[int] = []
    for _ in range(4):
        body = codex_body("Make the build pass.", pad)
        raw = json.dumps(body).encode()
        assert (len(raw) >= LARGE_BODY_BYTES) == bool(pad)
        sent.append(
            http_request("POST", gw.openai_base_url + "/responses", body=raw, token=key).status
        )
    assert sent == [200, 200, 200, 429]
    other = http_request(
        "POST", gw.openai_base_url + "/responses", body=codex_body("Another task.", pad), token=key
    )
    assert other.status == 200
    clock.advance(120)
