"""`Periodic`: a storage chore runs every interval while open, survives a StorageError
(logged), and stops at close."""

from __future__ import annotations

import asyncio

import pytest

from spendgate.errors import StorageError
from spendgate.storage.periodic import Periodic


async def test_a_chore_runs_until_closed_and_outlives_storage_errors(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runs = 0

    async def chore() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise StorageError("PostgreSQL is unreachable")

    periodic = Periodic(chore, 0.001, "a test chore")
    await periodic.open()
    while runs < 3:
        await asyncio.sleep(0.001)
    await periodic.close()
    stopped = runs
    await asyncio.sleep(0.01)
    assert runs == stopped
    assert "could not run a test chore" in caplog.text
