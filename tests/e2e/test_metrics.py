"""GET /metrics through the real gateway: a known workload (served, refused, auth failed,
two surfaces, two teams), the exposition parsed with prometheus_client's own parser, and
its requests, tokens and cost equal to what the ledger holds. Labels never name a user or
a key. Behind the admin token unless ``server.metrics_public``."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from harness import GatewayHarness

TOKEN = "metrics-admin-token"
CHAT = "gpt-4o-mini"
CLAUDE = "claude-haiku-4-5"


def _configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "ml-daily", "scope": "team", "match": "ml", "limit_usd": "5", "period": "daily"},
        {
            "name": "tiny-daily",
            "scope": "team",
            "match": "web",
            "limit_usd": "0.00001",
            "period": "daily",
        },
        {"name": "per-user", "scope": "user", "match": "*", "limit_usd": "3", "period": "daily"},
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("metrics") / "spendgate.db",
        configure=_configure,
        env={"SPENDGATE_ADMIN_TOKEN": TOKEN},
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def _samples(harness: GatewayHarness) -> list[Sample]:
    response = httpx2.get(
        f"{harness.url}/metrics", headers={"authorization": f"Bearer {TOKEN}"}, timeout=10
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return [
        sample
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    ]


def _sum(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def _workload(harness: GatewayHarness) -> tuple[str, str]:
    alice = harness.create_key(name="alice-laptop", team="ml", service="search", user="alice")
    alice_id = harness.last_key_id
    bob = harness.create_key(name="bob-ci", team="web", service="shop", user="bob")
    with harness.sdk_client("openai", alice, max_retries=0) as client:
        for _ in range(3):
            client.chat.completions.create(
                model=CHAT,
                messages=[{"role": "user", "content": f"hello {uuid.uuid4().hex}"}],
                max_tokens=30,
            )
    with harness.sdk_client("anthropic", alice, max_retries=0) as client:
        for _ in range(2):
            client.messages.create(
                model=CLAUDE,
                messages=[{"role": "user", "content": f"hi {uuid.uuid4().hex}"}],
                max_tokens=40,
            )
    with harness.sdk_client("openai", bob, max_retries=0) as client:
        for _ in range(2):  # its team's budget is smaller than one request's worst case
            with pytest.raises(openai.APIStatusError):
                client.chat.completions.create(
                    model=CHAT, messages=[{"role": "user", "content": "hi"}], max_tokens=500
                )
    with (
        harness.sdk_client("openai", "sk-sg-not-a-key", max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])
    harness.call(harness.gateway.settled())
    return alice_id, harness.last_key_id


def test_metrics_equal_the_ledger(gw: GatewayHarness) -> None:
    alice_id, bob_id = _workload(gw)
    samples = _samples(gw)
    served = gw.ledger()
    refused = gw.ledger(blocked=True)
    assert len(served) == 5
    assert len(refused) == 2

    requests = "spendgate_requests_total"
    assert _sum(samples, requests, outcome="served") == len(served)
    assert _sum(samples, requests, outcome="refused") == len(refused)
    assert _sum(samples, requests, outcome="auth_failed", status="401") == 1
    assert _sum(samples, requests, outcome="served", team="ml", model=CLAUDE) == 2
    assert _sum(samples, requests, outcome="served", surface="anthropic.messages") == 2
    assert _sum(samples, "spendgate_refusals_total", reason="tiny-daily", team="web") == 2
    assert _sum(samples, "spendgate_rejections_total", reason="invalid_api_key") == 1

    rows = served + refused
    tokens = "spendgate_tokens_total"
    assert _sum(samples, tokens, type="input") == sum(r.input_tokens for r in rows) > 0
    assert _sum(samples, tokens, type="output") == sum(r.output_tokens for r in rows) > 0
    assert _sum(samples, tokens, type="cached_input") == sum(r.cached_input_tokens for r in rows)
    assert _sum(samples, tokens, type="reasoning") == sum(r.reasoning_tokens for r in rows)
    cost = sum(r.cost_nanos for r in rows)
    assert cost > 0
    assert math.isclose(_sum(samples, "spendgate_cost_dollars_total"), cost / 1e9, rel_tol=1e-9)
    ml_cost = sum(r.cost_nanos for r in rows if r.team == "ml")
    assert math.isclose(
        _sum(samples, "spendgate_cost_dollars_total", team="ml", service="search"),
        ml_cost / 1e9,
        rel_tol=1e-9,
    )
    assert _sum(samples, "spendgate_request_duration_seconds_count", model=CHAT) == 3

    # The budgets, read at scrape time: the team budget's spend is the team's ledger cost.
    assert math.isclose(
        _sum(samples, "spendgate_budget_spent", budget="ml-daily", member="ml"),
        ml_cost / 1e9,
        rel_tol=1e-9,
    )
    assert _sum(samples, "spendgate_budget_limit", budget="ml-daily", member="ml") == 5
    assert _sum(samples, "spendgate_budget_state", budget="ml-daily", state="ok") == 1
    # A budget per user: counted by state, its members never named.
    assert _sum(samples, "spendgate_budget_members", budget="per-user") == 1

    named = {value for s in samples for value in s.labels.values()}
    assert not named & {"alice", "bob", alice_id, bob_id, "alice-laptop", "bob-ci"}


def test_metrics_need_the_admin_token(gw: GatewayHarness) -> None:
    assert httpx2.get(f"{gw.url}/metrics", timeout=10).status_code == 401
    wrong = {"authorization": "Bearer nope"}
    assert httpx2.get(f"{gw.url}/metrics", headers=wrong, timeout=10).status_code == 401


def test_metrics_without_an_admin_token_are_disabled_unless_public(tmp_path: Path) -> None:
    closed = GatewayHarness(tmp_path / "closed.db").start()
    try:
        response = httpx2.get(f"{closed.url}/metrics", timeout=10)
        assert response.status_code == 403
        assert "SPENDGATE_ADMIN_TOKEN" in response.text
    finally:
        closed.stop()

    def public(data: dict[str, Any]) -> None:
        data["server"]["metrics_public"] = True

    opened = GatewayHarness(tmp_path / "open.db", configure=public).start()
    try:
        with (
            opened.sdk_client("openai", "sk-sg-not-a-key", max_retries=0) as client,
            pytest.raises(openai.AuthenticationError),
        ):
            client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])
        response = httpx2.get(f"{opened.url}/metrics", timeout=10)
        assert response.status_code == 200
        samples = [s for f in text_string_to_metric_families(response.text) for s in f.samples]
        assert _sum(samples, "spendgate_requests_total", outcome="auth_failed") == 1
    finally:
        opened.stop()


def test_metrics_off_is_no_route(tmp_path: Path) -> None:
    """``server.metrics: false`` (the benchmark's "metrics off" variant): nothing is
    subscribed to count the events, and ``GET /metrics`` is no route."""

    def off(data: dict[str, Any]) -> None:
        data["server"]["metrics_public"] = True
        data["server"]["metrics"] = False

    gateway = GatewayHarness(tmp_path / "off.db", configure=off).start()
    try:
        with (
            gateway.sdk_client("openai", "sk-sg-not-a-key", max_retries=0) as client,
            pytest.raises(openai.AuthenticationError),
        ):
            client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}])
        response = httpx2.get(f"{gateway.url}/metrics", timeout=10)
        assert response.status_code == 404
    finally:
        gateway.stop()
