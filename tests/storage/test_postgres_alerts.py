"""The alert store on PostgreSQL, between gateway processes sharing one database: an alert
is raised once however many processes race to raise it (its deliveries exist once), and
processes polling the outbox at once claim disjoint deliveries (FOR UPDATE SKIP LOCKED),
each delivered exactly once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alerts_child import CHANNELS, alert, store_of
from pg_databases import throwaway_database
from storage_samples import NOW

from spendgate.clock import ManualClock
from spendgate.storage import open_storage

CHILD = Path(__file__).with_name("alerts_child.py")
PROCESSES = 3


@pytest.fixture
def pg_url() -> Iterator[str]:
    with throwaway_database() as url:
        yield url


def run_children(mode: str, url: str) -> list[str]:
    start_at = time.time() + 3.0  # every child open and waiting by then
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), mode, url, str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [child.communicate(timeout=120) for child in children]
    assert [child.returncode for child in children] == [0] * PROCESSES, outputs
    return [out for out, _ in outputs]


def test_gateway_processes_racing_raise_an_alert_once(pg_url: str) -> None:
    outputs = run_children("raise", pg_url)
    assert sum(int(out) for out in outputs) == 1

    async def log() -> list[tuple[str, str]]:
        storage = open_storage(pg_url, clock=ManualClock(NOW))
        await storage.open()
        try:
            entries = await store_of(storage).log(100)
            return sorted((entry.channel, entry.status) for entry in entries)
        finally:
            await storage.close()

    assert asyncio.run(log()) == [("mail", "pending"), ("ops", "pending")]


def test_gateway_processes_polling_at_once_deliver_each_once(pg_url: str) -> None:
    marks = [str(mark) for mark in range(40)]

    async def raise_all() -> None:
        storage = open_storage(pg_url, clock=ManualClock(NOW))
        await storage.open()
        try:
            for mark in marks:
                assert await store_of(storage).raise_alert(alert(mark), CHANNELS) is not None
        finally:
            await storage.close()

    asyncio.run(raise_all())
    outputs = run_children("claim", pg_url)
    claimed = [int(i) for out in outputs for i in out.split()]
    assert len(claimed) == len(marks) * len(CHANNELS)
    assert len(set(claimed)) == len(claimed)  # no delivery claimed (and sent) twice

    async def statuses() -> list[tuple[str, int]]:
        storage = open_storage(pg_url, clock=ManualClock(NOW))
        await storage.open()
        try:
            entries = await store_of(storage).log(1000)
            return sorted({(entry.status, entry.attempts) for entry in entries})
        finally:
            await storage.close()

    assert asyncio.run(statuses()) == [("delivered", 1)]
