"""Routing rules through the real SDKs: aliases per scope and per dialect, rewrite rules,
premium exceptions, and what the client and the ledger are told (docs/routing.md).

The served models' upstream names differ from their gateway names (``gpt-4o-mini`` is sent
upstream as ``gpt-4o-mini-2024-07-18``), so a test can tell the provider's ``model`` in the
body from spendgate's own ``x-spendgate-model``. A key listed in ``routing.premium.keys``
must exist before the config names it: the module starts a gateway once to issue it, then
the gateway under test on the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.pricing import cost_of
from spendgate.domain.usage import Usage

OPUS, SONNET, HAIKU = "claude-opus-4-1", "claude-sonnet-4-6", "claude-haiku-4-5"
UPSTREAM = {
    "gpt-4o-mini": "gpt-4o-mini-2024-07-18",
    "gpt-4o": "gpt-4o-2024-08-06",
    SONNET: "claude-sonnet-4-6-20250929",
    HAIKU: "claude-haiku-4-5-20251001",
    OPUS: "claude-opus-4-1-20250805",
}
PREMIUM = ["claude-opus-*", "gpt-4o"]
ALLOWANCE_NANOS = 2_000_000  # $0.002 per key: about two small Opus requests
MIN_INPUT = 3000
OUTPUT = {"x-sim-output-tokens": "10"}
PROMPT = [{"role": "user", "content": "Which model answers this?"}]


def routing(vip_key: str) -> dict[str, Any]:
    return {
        "premium": {
            "models": PREMIUM,
            "keys": [vip_key],
            "users": ["alice"],
            "with_tools": True,
            "min_input_tokens": MIN_INPUT,
            "allowance_budget": "premium-allowance",
        },
        "rules": [
            {"name": "default-everyone", "kind": "alias", "alias": "default", "to": "gpt-4o-mini"},
            {"name": "default-everyone-claude", "kind": "alias", "alias": "default", "to": HAIKU},
            {
                "name": "default-web",
                "kind": "alias",
                "scope": "team",
                "match": "web",
                "alias": "default",
                "to": "gpt-4o",
            },
            {
                "name": "default-carol",
                "kind": "alias",
                "scope": "user",
                "match": "carol",
                "alias": "default",
                "to": "o4-mini",
            },
            {"name": "smart-openai", "kind": "alias", "alias": "smart", "to": "gpt-4o"},
            {
                "name": "web-no-opus",
                "kind": "rewrite",
                "scope": "team",
                "match": "web",
                "models": ["claude-opus-*"],
                "to": SONNET,
            },
            {
                "name": "review-bot-mini",
                "kind": "rewrite",
                "scope": "service",
                "match": "review-bot",
                "models": ["gpt-4o"],
                "to": "gpt-4o-mini",
            },
        ],
    }


def configure_models(data: dict[str, Any]) -> None:
    models = data["models"]
    for name, upstream in UPSTREAM.items():
        provider = "anthropic" if name.startswith("claude") else "openai"
        models[name] = {"provider": provider, "upstream_model": upstream}
    data["budgets"] = [
        {
            "name": "premium-allowance",
            "scope": "key",
            "models": PREMIUM,
            "limit_usd": str(ALLOWANCE_NANOS / 1e9),
            "hard": False,
        }
    ]


class Routed:
    """The module's gateway, and the premium key issued before it started."""

    def __init__(self, harness: GatewayHarness, vip_secret: str, vip_id: str) -> None:
        self.gw = harness
        self.vip_secret = vip_secret
        self.vip_id = vip_id


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    db: Path = tmp_path_factory.mktemp("routing") / "spendgate.db"
    issuer = GatewayHarness(db, configure=configure_models).start()
    try:
        vip_secret = issuer.create_key(team="web", name="vip")
        vip_id = issuer.last_key_id
    finally:
        issuer.stop()

    def configure(data: dict[str, Any]) -> None:
        configure_models(data)
        data["routing"] = routing(vip_id)

    harness = GatewayHarness(db, configure=configure).start()
    try:
        yield Routed(harness, vip_secret, vip_id)
    finally:
        harness.stop()


@pytest.fixture
def gw(routed: Routed) -> GatewayHarness:
    return routed.gw


def key(gw: GatewayHarness, **spec: Any) -> tuple[str, str]:
    secret = gw.create_key(**spec)
    return secret, gw.last_key_id


def chat(gw: GatewayHarness, secret: str, model: str, **options: Any) -> Any:
    """A non-streamed chat completion; returns the raw response (headers + parsed body)."""
    options.setdefault("messages", PROMPT)
    headers = {**OUTPUT, **options.pop("extra_headers", {})}
    client = gw.sdk_client("openai", secret, max_retries=0)
    with client:
        return client.chat.completions.with_raw_response.create(
            model=model, max_tokens=50, extra_headers=headers, **options
        )


def message(gw: GatewayHarness, secret: str, model: str, **options: Any) -> Any:
    options.setdefault("messages", PROMPT)
    headers = {**OUTPUT, **options.pop("extra_headers", {})}
    client = gw.sdk_client("anthropic", secret, max_retries=0)
    with client:
        return client.messages.with_raw_response.create(
            model=model, max_tokens=50, extra_headers=headers, **options
        )


def only_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def usage_of(row: LedgerRow) -> Usage:
    return Usage(
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cached_input_tokens=row.cached_input_tokens,
        cache_write_tokens=row.cache_write_tokens,
        reasoning_tokens=row.reasoning_tokens,
    )


def cost_at(gw: GatewayHarness, row: LedgerRow, model: str) -> int:
    route = gw.gateway.models.get(model)
    assert route is not None
    assert route.price is not None
    return cost_of(usage_of(row), route.price)


def route_headers(raw: Any) -> dict[str, str | None]:
    names = ("model", "requested-model", "route-rule", "route-kind", "premium")
    return {name: raw.headers.get(f"x-spendgate-{name}") for name in names}


# aliases --------------------------------------------------------------------------------


def test_global_alias_resolves_per_dialect(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="ml")
    raw = chat(gw, secret, "default")
    assert route_headers(raw) == {
        "model": "gpt-4o-mini",
        "requested-model": "default",
        "route-rule": "default-everyone",
        "route-kind": "alias",
        "premium": None,
    }
    assert raw.parse().model == UPSTREAM["gpt-4o-mini"]
    raw = message(gw, secret, "default")
    assert route_headers(raw)["model"] == HAIKU
    assert route_headers(raw)["route-rule"] == "default-everyone-claude"
    assert raw.parse().model == UPSTREAM[HAIKU]
    rows = sorted(gw.ledger(key_id), key=lambda row: row.surface)
    assert [(r.surface, r.requested_model, r.routed_model, r.route_rule) for r in rows] == [
        ("anthropic.messages", "default", HAIKU, "default-everyone-claude"),
        ("openai.chat", "default", "gpt-4o-mini", "default-everyone"),
    ]
    for row in rows:
        assert row.route_kind == "alias"
        assert row.baseline_model == row.routed_model  # the alias is what was asked for
        assert row.baseline_cost_nanos is None
        assert row.served_model == UPSTREAM[row.routed_model or ""]
        assert row.cost_nanos == cost_at(gw, row, row.routed_model or "") > 0


def test_team_alias_beats_the_global_one_in_its_own_dialect_only(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    raw = chat(gw, secret, "default")
    assert route_headers(raw)["model"] == "gpt-4o"
    assert route_headers(raw)["route-rule"] == "default-web"
    # The web alias names an OpenAI model: /v1/messages keeps the global Anthropic one.
    raw = message(gw, secret, "default")
    assert route_headers(raw)["model"] == HAIKU
    assert route_headers(raw)["route-rule"] == "default-everyone-claude"
    client = gw.sdk_client("openai", secret, max_retries=0)
    with client:
        response = client.responses.create(model="default", input="hi", extra_headers=OUTPUT)
    assert response.model == UPSTREAM["gpt-4o"]
    routed = sorted((row.surface, row.routed_model) for row in gw.ledger(key_id))
    assert routed == [
        ("anthropic.messages", HAIKU),
        ("openai.chat", "gpt-4o"),
        ("openai.responses", "gpt-4o"),
    ]


def test_user_alias_beats_the_team_alias(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web", user="carol")
    raw = chat(gw, secret, "default")
    assert route_headers(raw)["model"] == "o4-mini"
    assert route_headers(raw)["route-rule"] == "default-carol"
    row = only_row(gw, key_id)
    assert (row.requested_model, row.routed_model, row.route_kind) == (
        "default",
        "o4-mini",
        "alias",
    )


def test_unknown_name_is_not_found_in_each_dialect(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    with pytest.raises(openai.NotFoundError) as oai_error:
        chat(gw, secret, "fastest")
    assert oai_error.value.code == "model_not_found"
    assert "'fastest'" in oai_error.value.message
    with pytest.raises(anthropic.NotFoundError) as claude_error:
        message(gw, secret, "fastest")
    assert "'fastest'" in claude_error.value.message
    assert gw.ledger(key_id) == []


def test_alias_declared_only_for_the_other_dialect_names_that_api(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="ml")
    assert route_headers(chat(gw, secret, "smart"))["model"] == "gpt-4o"
    with pytest.raises(anthropic.BadRequestError) as info:
        message(gw, secret, "smart")
    assert "OpenAI API" in info.value.message
    assert [row.surface for row in gw.ledger(key_id)] == ["openai.chat"]


# rewrites -------------------------------------------------------------------------------


def test_team_rewrite_moves_opus_to_sonnet(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    raw = message(gw, secret, OPUS)
    assert route_headers(raw) == {
        "model": SONNET,
        "requested-model": OPUS,
        "route-rule": "web-no-opus",
        "route-kind": "rewrite",
        "premium": None,
    }
    assert raw.parse().model == UPSTREAM[SONNET]  # the provider's body, untouched
    row = only_row(gw, key_id)
    assert row.requested_model == OPUS
    assert row.routed_model == SONNET
    assert row.served_model == UPSTREAM[SONNET]
    assert (row.route_rule, row.route_kind, row.baseline_model) == ("web-no-opus", "rewrite", OPUS)
    assert row.cost_nanos == cost_at(gw, row, SONNET) > 0
    assert row.baseline_cost_nanos == cost_at(gw, row, OPUS)
    assert row.baseline_cost_nanos == 5 * row.cost_nanos  # Opus costs 5x Sonnet, both ways
    assert row.attempt == 0
    assert row.fallback_from is None


def test_other_teams_keep_opus(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="ml")
    raw = message(gw, secret, OPUS)
    assert route_headers(raw) == {
        "model": OPUS,
        "requested-model": OPUS,
        "route-rule": None,
        "route-kind": None,
        "premium": None,
    }
    assert raw.parse().model == UPSTREAM[OPUS]
    row = only_row(gw, key_id)
    assert (row.routed_model, row.route_rule, row.route_kind) == (OPUS, None, None)
    assert row.baseline_model == OPUS
    assert row.baseline_cost_nanos is None


def test_service_rewrite_moves_gpt_4o_to_mini(gw: GatewayHarness) -> None:
    bot, bot_id = key(gw, team="platform", service="review-bot")
    other, other_id = key(gw, team="platform", service="triage-bot")
    raw = chat(gw, bot, "gpt-4o")
    assert route_headers(raw)["model"] == "gpt-4o-mini"
    assert route_headers(raw)["route-rule"] == "review-bot-mini"
    assert route_headers(raw)["route-kind"] == "rewrite"
    assert raw.parse().model == UPSTREAM["gpt-4o-mini"]
    row = only_row(gw, bot_id)
    assert (row.requested_model, row.routed_model, row.baseline_model) == (
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4o",
    )
    assert row.baseline_cost_nanos == cost_at(gw, row, "gpt-4o")
    raw = chat(gw, other, "gpt-4o")
    assert route_headers(raw)["model"] == "gpt-4o"
    assert route_headers(raw)["route-rule"] is None
    assert only_row(gw, other_id).routed_model == "gpt-4o"


def test_rewrite_applies_to_streams_and_reports_it(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    client = gw.sdk_client("anthropic", secret, max_retries=0)
    with (
        client,
        client.messages.with_streaming_response.create(
            model=OPUS, max_tokens=50, messages=PROMPT, stream=True, extra_headers=OUTPUT
        ) as response,
    ):
        headers = dict(response.headers)
        events = list(response.parse())
    assert headers["x-spendgate-model"] == SONNET
    assert headers["x-spendgate-route-rule"] == "web-no-opus"
    assert headers["x-spendgate-route-kind"] == "rewrite"
    assert events[0].type == "message_start"
    assert events[0].message.model == UPSTREAM[SONNET]
    bot, bot_id = key(gw, service="review-bot")
    oai = gw.sdk_client("openai", bot, max_retries=0)
    with oai:
        raw = oai.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=PROMPT, max_tokens=50, stream=True, extra_headers=OUTPUT
        )
        chunks = list(raw.parse())
    assert raw.headers["x-spendgate-model"] == "gpt-4o-mini"
    assert raw.headers["x-spendgate-route-rule"] == "review-bot-mini"
    assert {chunk.model for chunk in chunks} == {UPSTREAM["gpt-4o-mini"]}
    for row, rule, served in (
        (only_row(gw, key_id), "web-no-opus", SONNET),
        (only_row(gw, bot_id), "review-bot-mini", "gpt-4o-mini"),
    ):
        assert row.streamed
        assert (row.route_rule, row.route_kind, row.routed_model) == (rule, "rewrite", served)
        assert row.output_tokens == 10
        assert row.baseline_cost_nanos == cost_at(gw, row, row.baseline_model or "")
        assert row.baseline_cost_nanos > row.cost_nanos


# premium exceptions ---------------------------------------------------------------------


def assert_kept(gw: GatewayHarness, raw: Any, key_id: str) -> None:
    assert route_headers(raw) == {
        "model": OPUS,
        "requested-model": OPUS,
        "route-rule": None,
        "route-kind": None,
        "premium": "kept",
    }
    row = gw.ledger(key_id)[-1]
    assert (row.routed_model, row.route_rule, row.baseline_cost_nanos) == (OPUS, None, None)


def test_premium_key_keeps_opus(routed: Routed) -> None:
    gw = routed.gw
    assert_kept(gw, message(gw, routed.vip_secret, OPUS), routed.vip_id)


def test_premium_user_keeps_opus(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web", user="alice")
    assert_kept(gw, message(gw, secret, OPUS), key_id)


def test_requests_with_tools_keep_opus(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    tool = {
        "name": "lookup",
        "description": "Look a word up.",
        "input_schema": {"type": "object", "properties": {"word": {"type": "string"}}},
    }
    assert_kept(gw, message(gw, secret, OPUS, tools=[tool]), key_id)
    assert route_headers(message(gw, secret, OPUS))["model"] == SONNET


def test_big_prompts_keep_opus(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    long_prompt = [{"role": "user", "content": "spend " * (MIN_INPUT + 200)}]
    assert_kept(gw, message(gw, secret, OPUS, messages=long_prompt), key_id)
    assert gw.ledger(key_id)[-1].input_tokens >= MIN_INPUT
    short_prompt = [{"role": "user", "content": "spend " * (MIN_INPUT // 3)}]
    assert route_headers(message(gw, secret, OPUS, messages=short_prompt))["model"] == SONNET


def test_a_big_prompt_is_sized_by_the_aliased_models_tokenizer(gw: GatewayHarness) -> None:
    """``min_input_tokens`` counts the prompt as the model it would keep counts it: a
    prompt of about 2,400 gpt-4o tokens is under the 3,000 for ``smart`` (gpt-4o) as for
    ``gpt-4o`` by name. It was counted by the alias's name, which no tokenizer knows: a
    byte bound of about 4,200, and the alias kept the premium model."""
    secret, key_id = key(gw, service="review-bot")
    prompt = [{"role": "user", "content": "spend " * 2400}]
    for name in ("gpt-4o", "smart"):
        raw = chat(gw, secret, name, messages=prompt)
        assert route_headers(raw)["model"] == "gpt-4o-mini", name
        assert route_headers(raw)["route-rule"] == "review-bot-mini"
    rows = gw.ledger(key_id)
    assert [row.routed_model for row in rows] == ["gpt-4o-mini"] * 2


def test_opt_in_header_honoured_while_the_allowance_has_room(gw: GatewayHarness) -> None:
    secret, key_id = key(gw, team="web")
    assert route_headers(message(gw, secret, OPUS))["model"] == SONNET  # no opt-in
    opt_in = {"x-spendgate-premium": "1"}
    kept = rewritten = 0
    for _ in range(5):
        spent_on_premium = sum(r.cost_nanos for r in gw.ledger(key_id) if r.routed_model == OPUS)
        raw = message(gw, secret, OPUS, extra_headers=opt_in)
        if spent_on_premium < ALLOWANCE_NANOS:
            assert_kept(gw, raw, key_id)
            kept += 1
        else:
            assert route_headers(raw)["model"] == SONNET
            assert route_headers(raw)["route-rule"] == "web-no-opus"
            assert raw.headers.get("x-spendgate-premium") is None
            rewritten += 1
    assert kept >= 1
    assert rewritten >= 1
    # The allowance counts only the premium model; the rewritten requests did not use it.
    views = gw.call(gw.gateway.budget_service.overview("premium-allowance"))
    (view,) = [v for v in views if v.member == key_id]
    opus_spend = sum(r.cost_nanos for r in gw.ledger(key_id) if r.routed_model == OPUS)
    assert view.state.spent == opus_spend >= ALLOWANCE_NANOS
    assert view.state.reserved == 0
