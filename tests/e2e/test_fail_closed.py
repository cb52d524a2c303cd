"""Fail closed: no provider call without a durable record, whatever storage does.

Storage is broken for real, never mocked: another process holds SQLite's write lock, the
disk fills up (a small tmpfs mounted by the test), the database file is deleted or made
read-only while the gateway serves. Plain, budgeted and streamed requests in both dialects
run through it. What must hold:

* no provider call without a ledger trace: every call the simulator saw ends up with
  exactly one ledger row;
* callers get a 503 in their own dialect while storage fails, and ``/readyz`` says so;
* a request already in flight when storage fails still gets its whole answer, its row
  waits in the spool and is written once storage is back;
* once storage answers, reservations are back to 0 and requests flow again.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from e2e.process import spendgate_cli
from harness import GatewayHarness
from slow_stream import SlowStream

PROMPT = [{"role": "user", "content": "hello"}]
ADMIN = "fail-closed-admin"
BUDGETED_TEAM = "ml"  # a hard budget applies; team "web" has none


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "ml-daily", "scope": "team", "match": BUDGETED_TEAM, "limit_usd": "50"}
    ]


def start(db_path: Path) -> GatewayHarness:
    return GatewayHarness(
        db_path, configure=configure, env={"SPENDGATE_ADMIN_TOKEN": ADMIN}
    ).start()


def until(check: Callable[[], bool], what: str, limit_s: float = 20.0) -> None:
    """Poll ``check`` (a bound, not a timing: the test waits for a state, never a delay)."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.05)


def ready(gw: GatewayHarness) -> int:
    return httpx2.get(gw.url + "/readyz").status_code


def every_call_has_one_row(gw: GatewayHarness) -> None:
    rows = gw.ledger()
    per_request = Counter(row.upstream_request_id for row in rows if row.upstream_request_id)
    for record in list(gw.sim.records):
        assert per_request[record.request_id] == 1, record.to_json()
    assert all(count == 1 for count in per_request.values())


def reserved(gw: GatewayHarness) -> int:
    views = gw.call(gw.gateway.budget_service.overview())
    return sum(view.state.reserved for view in views)


def refused_in_each_dialect(gw: GatewayHarness, plain: str, budgeted: str) -> None:
    """Plain, budgeted and streamed requests, OpenAI and Anthropic: each a 503 in its
    dialect, none reaching the provider."""
    before = len(gw.sim.records)
    for secret in (plain, budgeted):
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            for stream in (False, True):
                with pytest.raises(openai.APIStatusError) as caught:
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=PROMPT, max_tokens=5, stream=stream
                    )
                error = caught.value
                assert error.status_code == 503
                assert isinstance(error.body, dict)
                assert error.body["code"] == "storage_unavailable"
        with gw.sdk_client("anthropic", secret, max_retries=0) as client:
            for stream in (False, True):
                with pytest.raises(anthropic.APIStatusError) as caught_anthropic:
                    client.messages.create(
                        model="claude-haiku-4-5", max_tokens=5, messages=PROMPT, stream=stream
                    )
                assert caught_anthropic.value.status_code == 503
                body = caught_anthropic.value.body
                assert isinstance(body, dict)
                assert body["error"]["type"] == "overloaded_error"
    assert len(gw.sim.records) == before, "a request reached the provider unrecorded"


def served(gw: GatewayHarness, secret: str) -> None:
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        answer = client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
    assert answer.choices[0].message.content


@pytest.mark.slow
def test_write_lock_held_by_another_process(tmp_path: Path) -> None:
    db = tmp_path / "spendgate.db"
    gw = start(db)
    try:
        plain = gw.create_key(name="plain", team="web")
        budgeted = gw.create_key(name="budgeted", team=BUDGETED_TEAM)
        served(gw, plain)
        served(gw, budgeted)
        in_flight = SlowStream(gw.openai_base_url, budgeted)
        in_flight.start()
        assert in_flight.first.wait(10)

        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            refused_in_each_dialect(gw, plain, budgeted)
            assert ready(gw) == 503
            in_flight.join(30)
            assert in_flight.error is None
            assert in_flight.text
            until(lambda: len(gw.gateway.spool) == 1, "the stream's row waits in the spool")
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()

        until(lambda: ready(gw) == 200, "ready again")
        until(lambda: len(gw.gateway.spool) == 0, "the spool written")
        served(gw, plain)
        served(gw, budgeted)
        every_call_has_one_row(gw)
        assert reserved(gw) == 0
        assert all(not row.unreconciled for row in gw.ledger())  # real costs, no worst cases
    finally:
        gw.stop()


@contextlib.contextmanager
def small_disk(where: Path, size: str) -> Iterator[Path]:
    where.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(disk: Path) -> Path:
    """Write a file until the disk is full."""
    filler = disk / "filler"
    # The close flushes what the last write left buffered: it fails too, and is suppressed.
    with contextlib.suppress(OSError), filler.open("wb") as handle:
        while True:
            handle.write(b"\0" * 65536)
            handle.flush()
    return filler


@pytest.mark.slow
def test_disk_full(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk", "8m") as disk:
        gw = start(disk / "spendgate.db")
        try:
            plain = gw.create_key(name="plain", team="web")
            budgeted = gw.create_key(name="budgeted", team=BUDGETED_TEAM)
            served(gw, plain)
            # A reader pins the WAL, so a commit must grow it: with the disk full, it fails.
            reader = sqlite3.connect(disk / "spendgate.db", isolation_level=None)
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM ledger").fetchone()
            filler = fill(disk)
            try:
                refused_in_each_dialect(gw, plain, budgeted)
                assert ready(gw) == 503
            finally:
                filler.unlink()
                reader.execute("ROLLBACK")
                reader.close()
            until(lambda: ready(gw) == 200, "ready again once there is room")
            served(gw, budgeted)
            every_call_has_one_row(gw)
            assert reserved(gw) == 0
        finally:
            gw.stop()


@pytest.mark.parametrize("how", ["deleted", "replaced", "read-only"])
def test_database_file_changed_under_the_gateway(tmp_path: Path, how: str) -> None:
    db = tmp_path / "spendgate.db"
    gw = start(db)
    try:
        plain = gw.create_key(name="plain", team="web")
        budgeted = gw.create_key(name="budgeted", team=BUDGETED_TEAM)
        served(gw, plain)
        rows_before = len(gw.ledger())
        if how == "read-only":
            db.chmod(0o444)
        elif how == "deleted":
            db.unlink()
        else:
            db.rename(tmp_path / "moved.db")
            sqlite3.connect(db).close()  # an empty database where it was
        refused_in_each_dialect(gw, plain, budgeted)
        assert ready(gw) == 503
        ready_body = httpx2.get(gw.url + "/readyz").json()
        assert ready_body["status"] == "storage unavailable"
        assert ready_body["stores"]["storage"] == "unavailable"
        if how == "read-only":
            db.chmod(0o644)
            until(lambda: ready(gw) == 200, "ready again once writable")
            served(gw, budgeted)
            every_call_has_one_row(gw)
        else:
            # nothing was written into the file that is no longer the database (read
            # through the gateway's own connection, which still has it open)
            assert len(gw.ledger()) == rows_before
            assert ready(gw) == 503  # and it stays refused: a restart picks the file
    finally:
        if db.exists():
            os.chmod(db, 0o644)
        gw.stop()


@pytest.mark.slow
def test_an_outage_allowance_lets_unbudgeted_requests_through_up_to_its_amount(
    tmp_path: Path,
) -> None:
    """``storage.outage_allowance_usd``: while storage fails, requests no budget applies
    to pass untraced until their worst cases reach the allowance; their rows wait in the
    spool. Budgeted requests are refused all the same."""

    def with_allowance(data: dict[str, Any]) -> None:
        configure(data)
        data["storage"]["outage_allowance_usd"] = "0.0001"

    db = tmp_path / "spendgate.db"
    gw = GatewayHarness(db, configure=with_allowance).start()
    try:
        plain = gw.create_key(name="plain", team="web")
        budgeted = gw.create_key(name="budgeted", team=BUDGETED_TEAM)
        served(gw, plain)
        blocker = sqlite3.connect(db, isolation_level=None)
        try:
            blocker.execute("BEGIN IMMEDIATE")
            before = len(gw.sim.records)
            with gw.sdk_client("openai", budgeted, max_retries=0) as client:
                with pytest.raises(openai.APIStatusError) as caught:
                    client.chat.completions.create(
                        model="gpt-4o-mini", messages=PROMPT, max_tokens=5
                    )
                assert caught.value.status_code == 503
            passed = 0
            with gw.sdk_client("openai", plain, max_retries=0) as client:
                for _ in range(50):
                    try:
                        client.chat.completions.create(
                            model="gpt-4o-mini", messages=PROMPT, max_tokens=5
                        )
                    except openai.APIStatusError as exc:
                        refusal = exc.status_code
                        break
                    passed += 1
                else:
                    pytest.fail("the allowance never ran out")
            assert refusal == 503
            allowance = gw.gateway.outage
            assert passed >= 1
            assert allowance.passed == passed
            assert allowance.used_nanos <= allowance.limit_nanos == 100_000
            assert len(gw.sim.records) == before + passed  # only those the allowance let by
            assert len(gw.gateway.spool) == passed  # their rows wait
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        until(lambda: len(gw.gateway.spool) == 0, "the spool written")
        served(gw, plain)  # a trace is taken again: the allowance is whole again
        assert gw.gateway.outage.used_nanos == 0
        every_call_has_one_row(gw)
    finally:
        gw.stop()


def test_a_read_only_database_at_start_is_one_clear_line(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    config = folder / "spendgate.yaml"
    config.write_text("storage:\n  url: sqlite:///spendgate.db\n", encoding="utf-8")
    made = spendgate_cli("keys", "create", "-c", str(config), "--name", "first")
    assert made.returncode == 0, made.stderr
    bound = subprocess.run(
        ["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True, check=False
    )
    if bound.returncode != 0:
        pytest.skip(f"cannot bind-mount here (needs root): {bound.stderr.strip()}")
    try:
        remounted = subprocess.run(
            ["mount", "-o", "remount,ro,bind", str(folder)], capture_output=True, check=False
        )
        assert remounted.returncode == 0
        started = spendgate_cli("serve", "-c", str(config), "--port", "0", timeout=30)
    finally:
        subprocess.run(["umount", str(folder)], check=False)
    assert started.returncode == 1
    assert "Traceback" not in started.stderr
    [line] = [text for text in started.stderr.splitlines() if text.strip()]
    assert line.startswith("Error: cannot start: ")
    assert "writable" in line
    assert str(folder / "spendgate.db") in line
