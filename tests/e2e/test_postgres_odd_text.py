"""A request whose ledger row holds text PostgreSQL cannot store as it is.

A provider's error message echoes a client's invalid value (``Invalid value: 'user\\x00'``,
as OpenAI and the simulator write it); a NUL in it made PostgreSQL refuse the row (its text
holds no NUL, SQLite's does). The row went to the spool, was refused there for ever, and
blocked every row spooled after it, while its trace lapsed into a worst-case charge. Sent
by the real ``openai`` SDK to a gateway on the machine's PostgreSQL: the row is written
at once, the NUL stored as ``\\x00``, and nothing waits in the spool."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from harness import GatewayHarness
from storage.pg_databases import throwaway_database


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayHarness]:
    with throwaway_database() as url:

        def configure(data: dict[str, Any]) -> None:
            data["storage"] = {"url": url, "spool_dir": str(tmp_path / "spool")}

        harness = GatewayHarness(tmp_path / "unused.db", configure=configure).start()
        try:
            yield harness
        finally:
            harness.stop()


def test_an_upstream_error_echoing_a_nul_is_written(gateway: GatewayHarness) -> None:
    secret = gateway.create_key(name="odd", team="ml")
    with (
        gateway.sdk_client("openai", secret, max_retries=0) as client,
        pytest.raises(openai.BadRequestError) as caught,
    ):
        client.chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=5,
            messages=[{"role": "user\x00", "content": "hello"}],
        )
    assert "user\x00" in caught.value.message  # the provider echoed it
    gateway.call(gateway.gateway.settled())
    assert len(gateway.gateway.spool) == 0
    rows = gateway.call(
        gateway.gateway.storage.ledger(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    )
    [row] = rows
    assert row.status == 400
    assert row.error is not None
    assert "'user\\x00'" in row.error
