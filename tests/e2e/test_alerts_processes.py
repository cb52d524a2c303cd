"""Alerts across processes: two ``spendgate serve`` children on one SQLite file, hundreds
of concurrent requests split between them crossing every threshold of one budget: the
receiver gets one post per threshold (the unique alert row decides who raises it, the
delivery lease who sends it). And a delivery pending when its gateway stops is sent by the
next gateway started on the database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import openai
import pytest

from alertkit import Receiver, fast_delivery, wait_until
from e2e.process import GatewayProcess, create_key_direct, free_port, write_config
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

MODEL = "gpt-4o-mini"
PROMPT = [{"role": "user", "content": "Say something short."}]
SIM = {"x-sim-output-tokens": "20"}


def _configure(alerts: dict[str, Any], limit_usd: str = "0.002") -> Any:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = [
            {
                "name": "team-ml",
                "scope": "team",
                "match": "ml",
                "limit_usd": limit_usd,
                "period": "monthly",
                "hard": False,
            }
        ]
        data["alerts"] = fast_delivery(alerts)

    return configure


async def _fire(
    urls: list[str], secret: str, count: int, max_tokens: int = 50
) -> list[BaseException | None]:
    clients = [
        openai.AsyncOpenAI(api_key=secret, base_url=url + "/v1", max_retries=0, timeout=60)
        for url in urls
    ]

    async def one(index: int) -> None:
        client = clients[index % len(clients)]
        await client.chat.completions.create(
            model=MODEL, messages=PROMPT, max_tokens=max_tokens, extra_headers=SIM
        )

    try:
        return await asyncio.gather(*(one(i) for i in range(count)), return_exceptions=True)
    finally:
        for client in clients:
            await client.close()


def _deliveries(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT a.mark, d.status, d.attempts FROM alert_deliveries d "
            "JOIN alerts a ON a.id = d.alert_id ORDER BY a.mark"
        ).fetchall()


def test_two_gateways_on_one_database_raise_each_threshold_once(tmp_path: Path) -> None:
    db = tmp_path / "spendgate.db"
    with SimulatorThread() as sim, Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "budgets": [
                {
                    "budget": "team-ml",
                    "thresholds": ["0.5", "0.8", "0.95", "1"],
                    "channels": ["ops"],
                }
            ],
        }
        config = write_config(tmp_path, sim.url, db_path=db, configure=_configure(alerts))
        secret = create_key_direct(config, name="ml", team="ml").secret
        with GatewayProcess(config).start() as one, GatewayProcess(config).start() as two:
            results = asyncio.run(_fire([one.url, two.url], secret, 400))
            assert [r for r in results if r is not None] == []
            assert wait_until(lambda: len(receiver.bodies()) >= 4)
            assert wait_until(lambda: {s for _, s, _ in _deliveries(db)} == {"delivered"})
            raised = [
                event
                for gateway in (one, two)
                for event in gateway.log_events()
                if event.get("msg") == "alert raised"
            ]
            crossings = [
                sum(event.get("msg") == "soft threshold crossed" for event in g.log_events())
                for g in (one, two)
            ]
    marks = sorted(int(body["mark"]) for body in receiver.bodies())
    assert marks == [5000, 8000, 9500, 10000]
    assert _deliveries(db) == [
        ("10000", "delivered", 1),
        ("5000", "delivered", 1),
        ("8000", "delivered", 1),
        ("9500", "delivered", 1),
    ]
    assert len(raised) == 4
    assert sum(crossings) >= 4


def test_a_threshold_crossed_again_in_the_other_process_is_not_raised_again(
    tmp_path: Path,
) -> None:
    """One request's reservation (1000 output tokens at most, ~60% of the limit) takes the
    budget past 50%;
    it settles at 20 tokens, far below. The same request through the other process
    crosses 50% again there, where it was never seen: the store refuses the second alert."""
    db = tmp_path / "spendgate.db"
    with SimulatorThread() as sim, Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "budgets": [
                {
                    "budget": "team-ml",
                    "thresholds": ["0.5"],
                    "projected": False,
                    "channels": ["ops"],
                }
            ],
        }
        configure = _configure(alerts, limit_usd="0.001")
        config = write_config(tmp_path, sim.url, db_path=db, configure=configure)
        secret = create_key_direct(config, name="ml", team="ml").secret
        with GatewayProcess(config).start() as one, GatewayProcess(config).start() as two:
            for gateway in (one, two, one, two):
                [result] = asyncio.run(_fire([gateway.url], secret, 1, max_tokens=1000))
                assert result is None
            assert wait_until(lambda: [s for _, s, _ in _deliveries(db)] == ["delivered"])
            crossings = [
                sum(event.get("msg") == "soft threshold crossed" for event in g.log_events())
                for g in (one, two)
            ]
    assert crossings == [1, 1]  # each process saw it crossed once...
    assert [body["mark"] for body in receiver.bodies()] == ["5000"]  # ...one alert
    assert _deliveries(db) == [("5000", "delivered", 1)]


def test_a_pending_delivery_is_sent_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "spendgate.db"
    port = free_port()  # nothing listens there until the second gateway runs
    alerts = {
        "channels": {"ops": {"kind": "webhook", "url": f"http://127.0.0.1:{port}/hook"}},
        "budgets": [
            {"budget": "team-ml", "thresholds": ["0.5"], "projected": False, "channels": ["ops"]}
        ],
        "max_attempts": 100,
        "backoff_s": 0.05,
        "max_backoff_s": 0.1,
    }
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, db_path=db, configure=_configure(alerts))
        secret = create_key_direct(config, name="ml", team="ml").secret
        with GatewayProcess(config).start() as first:
            assert asyncio.run(_fire([first.url], secret, 40)).count(None) == 40
            assert wait_until(lambda: any(a >= 1 for _, _, a in _deliveries(db)))
        [(mark, status, tried)] = _deliveries(db)
        assert (mark, status) == ("5000", "pending")
        with Receiver(port=port) as receiver, GatewayProcess(config).start():
            assert wait_until(lambda: _deliveries(db)[0][1] == "delivered")
        [(_, _, attempts)] = _deliveries(db)
    assert [body["mark"] for body in receiver.bodies("/hook")] == ["5000"]
    assert attempts > tried
