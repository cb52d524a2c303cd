"""Odd but valid operator input on the admin API, through a real gateway (tests/harness.py,
SQLite, a `ManualClock`, real traffic through the openai SDK): each answer is right or a
`400` naming the field, and a mistaken body changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.process import HttpResult, http_request
from harness import GatewayHarness
from spendgate.clock import ManualClock

ADMIN = "sg-admin-edges-test"
T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "org-monthly", "scope": "org", "match": "acme", "limit_usd": "1000"},
        {"name": "per-team", "scope": "team", "limit_usd": "100", "period": "daily"},
    ]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def gw(tmp_path: Path, clock: ManualClock) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=configure,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=clock,
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def admin(gw: GatewayHarness, method: str, path: str, body: Any = None) -> HttpResult:
    return http_request(method, gw.url + path, body=body, token=ADMIN)


def embed(gw: GatewayHarness, secret: str) -> None:
    with openai.OpenAI(
        base_url=gw.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        client.embeddings.create(model="text-embedding-3-small", input="hi")


def test_a_large_budget_burning_slowly_is_listed(gw: GatewayHarness, clock: ManualClock) -> None:
    """$1,000 a month and one short embedding (a few nano-dollars) in the last hour: at that
    rate the cap lies past the year 9999. The forecast overflowed `datetime`, and every view
    of the budgets failed with a 500 (the admin API, /v1/spendgate/me, the dashboard)."""
    secret = gw.create_key(name="embedder", team="ml", user="ann")
    embed(gw, secret)
    clock.advance(60)
    listed = admin(gw, "GET", "/admin/budgets?name=org-monthly")
    assert listed.status == 200, listed.body
    [view] = listed.json()["data"]
    assert 0 < view["spent"] < 1_000
    forecast = view["forecast"]
    assert forecast["recent"] == view["spent"]
    assert (forecast["cap_at"], forecast["exceeds"]) == (None, False)
    me = http_request("GET", gw.url + "/v1/spendgate/me", token=secret)
    assert me.status == 200, me.body
    assert "org-monthly" in {b["name"] for b in me.json()["budgets"]}
