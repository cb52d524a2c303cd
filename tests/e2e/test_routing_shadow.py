"""Shadow rules change nothing about a request — the model asked for serves it, and no
routing header names the shadow rule — but its ledger row records what the rule would have
done: ``shadow_rule``, ``shadow_model``, and ``shadow_cost_nanos``, the same usage at the
shadow model's prices (docs/routing.md, "Shadow rules").

One rule of each kind runs in shadow: an alias that would re-point a declared model's own
name, a rewrite, and a downgrade past half of a team budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage

OPUS, SONNET, HAIKU = "claude-opus-4-1", "claude-sonnet-4-6", "claude-haiku-4-5"
PROMPT = [{"role": "user", "content": "What would the shadow rule have done?"}]
OUTPUT = {"x-sim-output-tokens": "12"}
LIMIT_NANOS = 20_000_000  # team ml: ~18 small Opus answers
AT_BP = 5_000


def configure(data: dict[str, Any]) -> None:
    data["models"][OPUS] = {"provider": "anthropic"}
    data["models"]["gpt-4o"] = {"provider": "openai", "fallbacks": ["gpt-4o-mini"]}
    data["budgets"] = [
        {
            "name": "ml-monthly",
            "scope": "team",
            "match": "ml",
            "limit_usd": str(LIMIT_NANOS / 1e9),
        }
    ]
    data["routing"] = {
        "tiers": {OPUS: SONNET, SONNET: HAIKU},
        "rules": [
            {
                "name": "try-mini-for-4o",
                "kind": "alias",
                "scope": "team",
                "match": "platform",
                "alias": "gpt-4o",
                "to": "gpt-4o-mini",
                "shadow": True,
            },
            {
                "name": "try-haiku",
                "kind": "rewrite",
                "scope": "team",
                "match": "web",
                "models": ["claude-sonnet-*"],
                "to": HAIKU,
                "shadow": True,
            },
            {
                "name": "ml-soft-shadow",
                "kind": "downgrade",
                "budget": "ml-monthly",
                "at": str(AT_BP / 10_000),
                "shadow": True,
            },
        ],
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    db = tmp_path_factory.mktemp("shadow") / "spendgate.db"
    harness = GatewayHarness(db, configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


def cost_at(gw: GatewayHarness, row: LedgerRow, model: str) -> int:
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    usage = Usage(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cached_input_tokens=row.cached_input_tokens,
        cache_write_tokens=row.cache_write_tokens,
        reasoning_tokens=row.reasoning_tokens,
    )
    return cost_of(usage, route.price)


def assert_unchanged(raw: Any, model: str) -> None:
    """Served as asked, and no header tells of a rule."""
    assert raw.headers["x-spendgate-model"] == model
    assert raw.headers["x-spendgate-requested-model"] == model
    for name in ("route-rule", "route-kind", "premium", "fallback-from"):
        assert raw.headers.get(f"x-spendgate-{name}") is None, name


def assert_shadowed(gw: GatewayHarness, row: LedgerRow, model: str, rule: str, shadow: str) -> None:
    assert (row.requested_model, row.routed_model, row.baseline_model) == (model, model, model)
    assert (row.route_rule, row.route_kind, row.baseline_cost_nanos) == (None, None, None)
    assert (row.shadow_rule, row.shadow_model) == (rule, shadow)
    assert row.cost_nanos == cost_at(gw, row, model) > 0
    assert row.shadow_cost_nanos == cost_at(gw, row, shadow)
    assert row.shadow_cost_nanos < row.cost_nanos


def assert_no_shadow(row: LedgerRow) -> None:
    assert (row.shadow_rule, row.shadow_model, row.shadow_cost_nanos) == (None, None, None)


def test_shadow_alias_over_a_declared_name(gw: GatewayHarness) -> None:
    secret = gw.create_key(team="platform")
    key_id = gw.last_key_id
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=PROMPT, max_tokens=50, extra_headers=OUTPUT
        )
    assert raw.parse().model == "gpt-4o"
    assert_unchanged(raw, "gpt-4o")
    (row,) = gw.ledger(key_id)
    assert row.served_model == "gpt-4o"
    assert_shadowed(gw, row, "gpt-4o", "try-mini-for-4o", "gpt-4o-mini")
    # Out of the rule's scope, nothing is recorded either.
    other = gw.create_key(team="web")
    other_id = gw.last_key_id
    with gw.sdk_client("openai", other, max_retries=0) as client:
        client.chat.completions.create(
            model="gpt-4o", messages=PROMPT, max_tokens=50, extra_headers=OUTPUT
        )
    (row,) = gw.ledger(other_id)
    assert row.routed_model == "gpt-4o"
    assert_no_shadow(row)


def test_a_fallback_to_the_shadow_model_records_its_shadow_cost(gw: GatewayHarness) -> None:
    """gpt-4o fails and its fallback gpt-4o-mini, the shadow rule's model, answers: the
    answer's row records the shadow cost, the same usage at gpt-4o-mini's prices, which is
    its own cost. It was NULL beside the shadow rule and model."""
    secret = gw.create_key(team="platform")
    key_id = gw.last_key_id
    failing = {**OUTPUT, "x-sim-fail-models": "gpt-4o", "x-sim-status": "503"}
    with gw.sdk_client("openai", secret, max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=PROMPT, max_tokens=50, extra_headers=failing
        )
    assert raw.headers["x-spendgate-model"] == "gpt-4o-mini"
    failed, answer = sorted(gw.ledger(key_id), key=lambda row: row.attempt)
    assert (failed.status, failed.routed_model, failed.cost_nanos) == (503, "gpt-4o", 0)
    assert (failed.shadow_model, failed.shadow_cost_nanos) == ("gpt-4o-mini", 0)
    assert (answer.routed_model, answer.fallback_from) == ("gpt-4o-mini", "gpt-4o")
    assert (answer.shadow_rule, answer.shadow_model) == ("try-mini-for-4o", "gpt-4o-mini")
    assert answer.cost_nanos == cost_at(gw, answer, "gpt-4o-mini") > 0
    assert answer.shadow_cost_nanos == answer.cost_nanos


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_shadow_rewrite(gw: GatewayHarness, stream: bool) -> None:
    secret = gw.create_key(team="web")
    key_id = gw.last_key_id
    with gw.sdk_client("anthropic", secret, max_retries=0) as client:
        raw = client.messages.with_raw_response.create(
            model=SONNET, max_tokens=50, messages=PROMPT, extra_headers=OUTPUT, stream=stream
        )
        body = raw.parse()
        events = list(body) if stream else []
        served = events[0].message.model if stream else body.model
    assert served == SONNET
    assert_unchanged(raw, SONNET)
    (row,) = gw.ledger(key_id)
    assert row.streamed is stream
    assert row.output_tokens == 12
    assert_shadowed(gw, row, SONNET, "try-haiku", HAIKU)


def test_shadow_downgrade_records_from_the_threshold_on(gw: GatewayHarness) -> None:
    secret = gw.create_key(team="ml")
    key_id = gw.last_key_id
    crossed = 0
    with gw.sdk_client("anthropic", secret, max_retries=0) as client:
        for _ in range(40):
            used = sum(row.cost_nanos for row in gw.ledger(key_id))
            past = used * 10_000 // LIMIT_NANOS >= AT_BP
            raw = client.messages.with_raw_response.create(
                model=OPUS, max_tokens=50, messages=PROMPT, extra_headers=OUTPUT
            )
            assert_unchanged(raw, OPUS)
            request_id = raw.headers["x-spendgate-request-id"]
            (row,) = [row for row in gw.ledger(key_id) if row.request_id == request_id]
            assert row.routed_model == OPUS
            if past:
                assert_shadowed(gw, row, OPUS, "ml-soft-shadow", SONNET)
                crossed += 1
                if crossed == 3:
                    break
            else:
                assert_no_shadow(row)
    assert crossed == 3, "the budget never passed the shadow rule's threshold"
    rows = gw.ledger(key_id)
    assert len([row for row in rows if row.shadow_rule is None]) >= 5
    assert gw.ledger(key_id, blocked=True) == []
