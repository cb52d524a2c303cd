"""A spendgate in front of another (a team's gateway whose provider is the organization's):
the client sees the headers of the gateway it called, never the inner one's budgets, ids
or limits, and each header once, whatever case the inner answer wrote it in."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness import GatewayHarness


@pytest.fixture(scope="module")
def inner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = [
            {"name": "org-secret-budget", "scope": "team", "match": "*", "limit_usd": "1000"}
        ]

    harness = GatewayHarness(
        tmp_path_factory.mktemp("inner") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def _outer(inner: GatewayHarness, path: Path) -> GatewayHarness:
    def configure(data: dict[str, Any]) -> None:
        data["providers"]["openai"]["base_url"] = inner.openai_base_url
        data["limits"] = [{"name": "per-key", "scope": "key", "requests": "100/minute"}]

    secret = inner.create_key(team="platform", user="team-gateway")
    return GatewayHarness(path, configure=configure, env={"SIM_OPENAI_KEY": secret}).start()


def test_the_inner_gateways_headers_stay_inside(inner: GatewayHarness, tmp_path: Path) -> None:
    outer = _outer(inner, tmp_path / "outer.db")
    try:
        secret = outer.create_key(team="ml", user="dana")
        with outer.sdk_client("openai", secret, max_retries=0, timeout=10) as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
            )
        headers = raw.headers
        # the inner gateway's budget (the organization's) is not the caller's business
        assert "x-spendgate-budget" not in headers
        assert "x-spendgate-budget-remaining" not in headers
        # one request id, the outer gateway's, the one its ledger row has
        assert headers.get_list("x-spendgate-request-id") == [outer.ledger()[-1].request_id]
        # one rate-limit figure per header: the outer gateway's limit
        assert headers.get_list("x-ratelimit-limit-requests") == ["100"]
    finally:
        outer.stop()
