"""GET /v1/spendgate/me and ``spendgate me`` through the real gateway: a key sees its own
identity, every budget and limit that counts it (and none that does not), and its own last
requests, with either header; never another key's. Non-streamed answers carry
``x-spendgate-cost``, equal to the ledger row's cost."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx2
import pytest
from click.testing import CliRunner

from e2e.test_cli_start import HEAVY, imported, loaded
from harness import GatewayHarness
from spendgate.cli.main import cli
from spendgate.domain.key_limits import KeyLimits

CHAT = "gpt-4o-mini"


def _configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "ml-daily", "scope": "team", "match": "ml", "limit_usd": "5", "period": "daily"},
        {"name": "web-daily", "scope": "team", "match": "web", "limit_usd": "5", "period": "daily"},
        {"name": "per-user", "scope": "user", "match": "*", "limit_usd": "3", "period": "daily"},
    ]
    data["limits"] = [
        {"name": "ml-rate", "scope": "team", "match": "ml", "requests": "100/minute"},
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("me") / "spendgate.db", configure=_configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def _chat(harness: GatewayHarness, secret: str) -> Any:
    with harness.sdk_client("openai", secret, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model=CHAT,
            messages=[{"role": "user", "content": f"hello {uuid.uuid4().hex}"}],
            max_tokens=30,
        )


def _me(harness: GatewayHarness, headers: dict[str, str], query: str = "") -> httpx2.Response:
    return httpx2.get(f"{harness.url}/v1/spendgate/me{query}", headers=headers, timeout=10)


def test_a_key_sees_itself_and_only_itself(gw: GatewayHarness) -> None:
    alice = gw.create_key(
        name="alice-laptop", team="ml", user="alice", tags=["exp"], limits=KeyLimits("2")
    )
    alice_id = gw.last_key_id
    bob = gw.create_key(name="bob-ci", team="web", user="bob")
    bob_id = gw.last_key_id
    for _ in range(3):
        _chat(gw, alice)
    _chat(gw, bob)
    gw.call(gw.gateway.settled())
    alice_rows = gw.ledger(alice_id)
    assert len(alice_rows) == 3

    response = _me(gw, {"authorization": f"Bearer {alice}"})
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["key"]["id"] == alice_id
    assert (data["key"]["user"], data["key"]["team"], data["key"]["org"]) == ("alice", "ml", "acme")
    assert data["key"]["tags"] == ["exp"]
    assert "key_hash" not in data["key"]
    budgets = {(b["name"], b["member"]): b for b in data["budgets"]}
    assert set(budgets) == {
        ("ml-daily", "ml"),
        ("ml-rate:requests/minute", "ml"),
        ("per-user", "alice"),
        (f"key:{alice_id}", alice_id),
    }
    spent = sum(row.cost_nanos for row in alice_rows)
    assert spent > 0
    for name in ("ml-daily", "per-user", f"key:{alice_id}"):
        [view] = [b for b in data["budgets"] if b["name"] == name]
        assert view["spent"] == spent, name
        assert view["state"] == "ok"
        assert view["resets_at"] is not None
    assert budgets[("ml-rate:requests/minute", "ml")]["spent"] == 3
    assert budgets[(f"key:{alice_id}", alice_id)]["remaining"] == 2_000_000_000 - spent
    newest_first = alice_rows[::-1]  # the ledger's order is oldest first
    assert [r["request_id"] for r in data["requests"]] == [r.request_id for r in newest_first]
    assert [r["cost_nanos"] for r in data["requests"]] == [r.cost_nanos for r in newest_first]
    assert {r["model"] for r in data["requests"]} == {CHAT}
    assert {r["status"] for r in data["requests"]} == {200}

    # bob, with x-api-key: his own, nothing of alice's
    bobs = _me(gw, {"x-api-key": bob}).json()
    assert bobs["key"]["id"] == bob_id
    assert {(b["name"], b["member"]) for b in bobs["budgets"]} == {
        ("web-daily", "web"),
        ("per-user", "bob"),
    }
    [row] = bobs["requests"]
    assert row["request_id"] == gw.ledger(bob_id)[0].request_id
    bob_text = _me(gw, {"x-api-key": bob}).text
    assert alice_id not in bob_text
    assert not any(row.request_id in bob_text for row in alice_rows)

    limited = _me(gw, {"x-api-key": alice}, "?limit=1").json()
    assert len(limited["requests"]) == 1
    assert _me(gw, {"x-api-key": alice}, "?limit=0").status_code == 400


def test_me_needs_a_valid_key(gw: GatewayHarness) -> None:
    assert _me(gw, {}).status_code == 401
    assert _me(gw, {"authorization": "Bearer sk-sg-not-a-key"}).status_code == 401


@pytest.mark.parametrize("user", [None, "carol"])  # no budget applies / budgeted
def test_a_non_streamed_answer_carries_its_cost(gw: GatewayHarness, user: str | None) -> None:
    secret = gw.create_key(name=f"cost-{user}", team="platform", user=user)
    raw = _chat(gw, secret)
    gw.call(gw.gateway.settled())
    [row] = gw.ledger(gw.last_key_id)
    assert row.cost_nanos > 0
    assert Decimal(raw.headers["x-spendgate-cost"]) * 1_000_000_000 == row.cost_nanos


def test_the_cli_prints_it(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="dana-box", team="ml", user="dana")
    key_id = gw.last_key_id
    _chat(gw, secret)
    result = CliRunner().invoke(cli, ["me", "--key", secret, "--url", gw.url])
    assert result.exit_code == 0, result.output
    assert f"Key {key_id} (dana-box" in result.output
    assert "ml-daily (team ml, daily)" in result.output
    assert "per-user (user dana, daily)" in result.output
    assert "Last 1 requests" in result.output
    failed = CliRunner().invoke(cli, ["me", "--key", "sk-sg-nope", "--url", gw.url])
    assert failed.exit_code == 1
    assert "401" in failed.output


def test_the_cli_command_imports_nothing_heavy() -> None:
    """``spendgate me`` talks HTTP with the standard library: no server, config or storage."""
    modules = imported("me", "--help")
    assert "spendgate.cli.me" in modules
    assert loaded(modules, HEAVY) == []
