"""Live counters do not grow with time: rows no window counts any more are dropped by the
lease keeper (loop-detection fingerprints and old rolling buckets above all)."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai

from harness import GatewayHarness
from spendgate.clock import ManualClock


def configure(data: dict[str, Any]) -> None:
    data["limits"] = [{"name": "rpm", "scope": "key", "requests": "100/minute"}]
    data["runaway"] = {"loop_max_repeats": 5, "loop_window_s": 60}


def counter_rows(path: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT budget, spent, reserved FROM budget_counters").fetchall()


def test_counters_older_than_every_window_are_pruned(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2025, 6, 1, 12, 0, tzinfo=UTC))
    gw = GatewayHarness(tmp_path / "spendgate.db", configure=configure, clock=clock).start()
    try:
        secret = gw.create_key(name="pruned")
        with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
            for text in ("one", "two", "three"):
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": text}], max_tokens=5
                )
        rows = counter_rows(gw.db_path)
        assert sorted(name for name, _, _ in rows) == ["loop-detection"] * 3 + [
            "rpm:requests/minute"
        ]
        keeper = gw.gateway.lease_keeper
        assert keeper is not None
        gw.call(keeper.tick())
        assert len(counter_rows(gw.db_path)) == 4  # all still inside their windows
        clock.advance(180)  # past the 60 s windows and their last bucket
        gw.call(keeper.tick())
        assert counter_rows(gw.db_path) == []
    finally:
        gw.stop()
