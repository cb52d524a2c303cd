"""Budget-aware downgrades: past a soft threshold of the team budget, requests for Opus are
served one tier down (Sonnet), past a second threshold two tiers down (Haiku), and the hard
limit refuses only when even the cheapest tier cannot fit.

Every request asks for ``MAX_TOKENS`` and the simulator generates exactly ``OUTPUT_TOKENS``
(``x-sim-output-tokens``); ``min_output_tokens`` equals ``MAX_TOKENS``, so no ceiling is
lowered: a request is admitted at its full worst case or refused, and each tier's cost per
request is fixed. The sequential test predicts, from the ledger alone, the tier of every
request; the concurrent one fires them all at once with the async Anthropic SDK.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import anthropic
import pytest

from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow

OPUS, SONNET, HAIKU = "claude-opus-4-1", "claude-sonnet-4-6", "claude-haiku-4-5"
TIER = {OPUS: 0, SONNET: 1, HAIKU: 2}
MAX_TOKENS = 100
OUTPUT_TOKENS = 75
SIM = {"x-sim-output-tokens": str(OUTPUT_TOKENS)}
PROMPT = [{"role": "user", "content": "Summarise the budget report."}]
LIMIT_NANOS = 100_000_000  # $0.10: ~17 Opus answers, ~85 Sonnet, ~250 Haiku
SOFT, HARD_SOFT = 5_000, 8_000  # basis points: one tier down at 50 %, two at 80 %


@contextmanager
def gateway(tmp_path: Path, limit_nanos: int = LIMIT_NANOS) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["models"][OPUS] = {"provider": "anthropic"}
        data["budgets"] = [
            {
                "name": "ml-monthly",
                "scope": "team",
                "match": "ml",
                "limit_usd": str(limit_nanos / 1e9),
                "soft_thresholds": ["0.5", "0.8"],
            }
        ]
        data["budget_settings"] = {"min_output_tokens": MAX_TOKENS}
        data["routing"] = {
            "tiers": {OPUS: SONNET, SONNET: HAIKU},
            "rules": [
                # `at` omitted: the budget's first soft threshold (0.5)
                {"name": "ml-soft", "kind": "downgrade", "budget": "ml-monthly"},
                {"name": "ml-late", "kind": "downgrade", "budget": "ml-monthly", "at": "0.8"},
            ],
        }

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


def tier_for(used_nanos: int) -> str:
    """The tier the rules choose for a counter that has used ``used_nanos`` of the limit."""
    used_bp = used_nanos * 10_000 // LIMIT_NANOS
    steps = (used_bp >= SOFT) + (used_bp >= HARD_SOFT)
    return [OPUS, SONNET, HAIKU][steps]


def ask(client: anthropic.Anthropic) -> Any:
    return client.messages.with_raw_response.create(
        model=OPUS, max_tokens=MAX_TOKENS, messages=PROMPT, extra_headers=SIM
    )


def reserved_total(gw: GatewayHarness) -> int:
    views = gw.call(gw.gateway.budget_service.overview("ml-monthly"))
    return sum(view.state.reserved for view in views)


def spent(rows: list[LedgerRow]) -> int:
    return sum(row.cost_nanos for row in rows)


def assert_downgrade_rows(rows: list[LedgerRow], *, exact_rule: bool = True) -> None:
    for row in rows:
        assert row.requested_model == OPUS
        assert row.baseline_model == OPUS
        assert row.output_tokens == OUTPUT_TOKENS
        if row.routed_model == OPUS:
            assert (row.route_rule, row.route_kind, row.baseline_cost_nanos) == (None, None, None)
            continue
        assert row.route_kind == "downgrade", row
        # Routed past 0.8, two rules fire and the later one names the step that served it;
        # a request stepped down at admission (the budget filled while it was routed)
        # names the first rule that applies.
        rule = "ml-soft" if row.routed_model == SONNET else "ml-late"
        assert row.route_rule in ((rule,) if exact_rule else ("ml-soft", "ml-late")), row
        assert row.baseline_cost_nanos is not None
        assert row.baseline_cost_nanos > row.cost_nanos


def test_sequential_requests_flip_tier_exactly_at_each_threshold(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        secret = gw.create_key(team="ml")
        key_id = gw.last_key_id
        client = gw.sdk_client("anthropic", secret, max_retries=0)
        served: list[str] = []
        with client:
            for index in range(400):
                expected = tier_for(spent(gw.ledger(key_id)))
                refusal: anthropic.APIStatusError | None = None
                try:
                    raw = ask(client)
                except anthropic.APIStatusError as error:
                    refusal = error
                if refusal is not None:
                    assert refusal.status_code == 402
                    assert expected == HAIKU, f"request {index} refused at tier {expected}"
                    assert "ml-monthly" in refusal.message
                    break
                model = raw.headers["x-spendgate-model"]
                assert model == expected, f"request {index}: {model}, expected {expected}"
                assert raw.headers.get("x-spendgate-route-kind") == (
                    None if model == OPUS else "downgrade"
                )
                served.append(model)
            else:
                pytest.fail("400 requests never exhausted the budget")
        rows = gw.ledger(key_id)
        assert [row.routed_model for row in rows] == served
        assert_downgrade_rows(rows)
        # The flips happen at the first request admitted past each threshold.
        first_sonnet, first_haiku = served.index(SONNET), served.index(HAIKU)
        assert served[:first_sonnet] == [OPUS] * first_sonnet
        assert set(served[first_sonnet:first_haiku]) == {SONNET}
        assert set(served[first_haiku:]) == {HAIKU}
        assert spent(rows[:first_sonnet]) >= LIMIT_NANOS // 2 > spent(rows[: first_sonnet - 1])
        before_haiku = spent(rows[:first_haiku])
        assert before_haiku >= LIMIT_NANOS * 8 // 10 > spent(rows[: first_haiku - 1])
        total = spent(rows)
        assert total <= LIMIT_NANOS
        # The refusal came when Haiku no longer fitted: what is left is less than its worst case.
        (blocked,) = gw.ledger(key_id, blocked=True)
        assert blocked.routed_model == HAIKU
        assert blocked.blocked_by == "ml-monthly"
        assert LIMIT_NANOS - total < blocked.would_cost_nanos
        assert reserved_total(gw) == 0


async def fire(gw: GatewayHarness, secret: str, count: int) -> tuple[list[Any], list[Any]]:
    client = anthropic.AsyncAnthropic(api_key=secret, base_url=gw.url, max_retries=0, timeout=60)
    async with client:
        results = await asyncio.gather(
            *(
                client.messages.with_raw_response.create(
                    model=OPUS, max_tokens=MAX_TOKENS, messages=PROMPT, extra_headers=SIM
                )
                for _ in range(count)
            ),
            return_exceptions=True,
        )
    answered = [r for r in results if not isinstance(r, BaseException)]
    failed = [r for r in results if isinstance(r, BaseException)]
    return answered, failed


def test_concurrent_requests_step_down_and_never_overspend(tmp_path: Path) -> None:
    count = 300  # even all-Haiku answers would cost more than the limit: some are refused
    with gateway(tmp_path) as gw:
        secret = gw.create_key(team="ml")
        key_id = gw.last_key_id
        answered, failed = gw.run_async(lambda: fire(gw, secret, count))
        assert failed
        for error in failed:
            assert isinstance(error, anthropic.APIStatusError), repr(error)
            # 402 once the budget is spent; 429 (retryable) when its room was held by
            # requests in flight and the line to wait for it was full
            assert error.status_code in (402, 429), error
            assert "ml-monthly" in error.message
        rows = gw.ledger(key_id)
        assert len(rows) == len(answered)
        for raw in answered:
            assert raw.headers["x-spendgate-requested-model"] == OPUS
        served = [raw.headers["x-spendgate-model"] for raw in answered]
        assert sorted(served) == sorted(row.routed_model for row in rows)
        # Opus first, then a cheaper tier. Which one is not fixed: when many requests are
        # routed at once, the reservations in flight can carry the counter from below 0.5
        # to past 0.8 between two of them, and then no request is served by Sonnet.
        assert OPUS in served
        assert {SONNET, HAIKU} & set(served)
        assert_downgrade_rows(rows, exact_rule=False)
        assert spent(rows) <= LIMIT_NANOS
        assert reserved_total(gw) == 0
        blocked = gw.ledger(key_id, blocked=True)
        assert len(blocked) == len(failed)
        assert all(row.blocked_by == "ml-monthly" for row in blocked)
        # Refused only where even the cheapest tier did not fit: a request routed to a tier
        # the budget could no longer afford (it filled up while the request was routed)
        # stepped down instead, and only Haiku's refusal is recorded.
        assert {row.routed_model for row in blocked} == {HAIKU}, [
            (row.request_id, row.routed_model, row.route_rule, row.error) for row in blocked
        ]


def small_budget(tmp_path: Path) -> AbstractContextManager[GatewayHarness]:
    """A budget that one Opus worst case nearly fills: Opus fits once, not twice."""
    return gateway(tmp_path, limit_nanos=12_000_000)


def test_request_the_routed_tier_cannot_afford_is_stepped_down_not_refused(
    tmp_path: Path,
) -> None:
    with small_budget(tmp_path) as gw:
        secret = gw.create_key(team="ml")
        key_id = gw.last_key_id
        client = gw.sdk_client("anthropic", secret, max_retries=0)
        with client:
            first = ask(client)
            assert first.headers["x-spendgate-model"] == OPUS
            used = spent(gw.ledger(key_id))
            assert used < 12_000_000 // 2  # below the threshold: the router keeps Opus
            second = ask(client)  # Opus no longer fits; Sonnet (a fifth of it) does
        assert second.headers["x-spendgate-model"] == SONNET
        assert second.headers["x-spendgate-route-kind"] == "downgrade"
        assert second.headers["x-spendgate-route-rule"] == "ml-soft"
        rows = gw.ledger(key_id)
        assert [row.routed_model for row in rows] == [OPUS, SONNET]
        assert (rows[1].route_kind, rows[1].baseline_model) == ("downgrade", OPUS)
        assert gw.ledger(key_id, blocked=True) == []  # the Opus refusal is not a block
        assert reserved_total(gw) == 0


def test_a_per_model_budget_downgrades_a_request_sent_by_alias(tmp_path: Path) -> None:
    """A downgrade rule watching a ``scope: model`` budget reads the counter of the model the
    request would be served by, not of the name sent: a request for the alias ``smart``
    (served by gpt-4o, counted under gpt-4o) steps down once gpt-4o's budget is half used,
    exactly as a request for gpt-4o by name does. It read the counter of ``smart``, which
    nothing counts under, and kept serving gpt-4o past the threshold."""
    limit_nanos = 1_000_000

    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = [
            # soft: only the routing rule moves requests, never a refusal at admission
            {
                "name": "per-model",
                "scope": "model",
                "match": "*",
                "limit_usd": str(limit_nanos / 1e9),
                "hard": False,
            }
        ]
        data["routing"] = {
            "tiers": {"gpt-4o": "gpt-4o-mini"},
            "rules": [
                {"name": "smart", "kind": "alias", "alias": "smart", "to": "gpt-4o"},
                {"name": "model-soft", "kind": "downgrade", "budget": "per-model", "at": "0.5"},
            ],
        }

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        secret = harness.create_key(team="ml")
        served = []
        with harness.sdk_client("openai", secret, max_retries=0) as client:
            for name in ["smart", "gpt-4o"] * 4:
                on_gpt_4o = sum(
                    r.cost_nanos for r in harness.ledger() if r.routed_model == "gpt-4o"
                )
                expected = "gpt-4o-mini" if on_gpt_4o * 10_000 // limit_nanos >= 5_000 else "gpt-4o"
                raw = client.chat.completions.with_raw_response.create(
                    model=name,
                    max_tokens=20,
                    messages=[{"role": "user", "content": "hi"}],
                    extra_headers={"x-sim-output-tokens": "20"},
                )
                assert raw.headers["x-spendgate-model"] == expected, (name, on_gpt_4o)
                served.append((name, expected))
        assert ("smart", "gpt-4o-mini") in served
        assert ("smart", "gpt-4o") in served
    finally:
        harness.stop()
