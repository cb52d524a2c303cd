"""A body is priced by its byte bound first and counted only where that bound does
not fit (`spendgate.pipeline.bound_first`): with room to spare the request holds the
bound while in flight; where only the exact count fits, the request is admitted as it
would have been without the bound (not refused, not clamped); either way it settles at
its real usage and leaves nothing reserved. A real gateway and SDK on loopback."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import openai
import pytest

from harness import GatewayHarness
from spendgate.domain import tokens
from spendgate.domain.admission import WorstCase, worst_case
from spendgate.domain.budgets import Unit
from spendgate.domain.token_bound import BYTE_BOUND, counting_with
from spendgate.pipeline.worst_case import input_upper_bound

MODEL = "gpt-4o-mini"
CEILING = 100
MIN_OUTPUT = 16
SHADOW_TOKENS = 16_000
USERS = ("roomy", "exact-only", "bound-clamped", "shadowed")


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": f"b-{user}", "scope": "user", "match": user, "limit_usd": "10", "period": "daily"}
        for user in USERS
    ]
    data["budget_settings"] = {"min_output_tokens": MIN_OUTPUT}
    # counts, never refuses: the bound of a body (~20k tokens) would pass it, its count not
    data["limits"] = [
        {
            "name": "shadow-tpm",
            "scope": "user",
            "match": "shadowed",
            "tokens": f"{SHADOW_TOKENS}/minute",
            "shadow": True,
        }
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("bound-first") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def messages() -> list[dict[str, str]]:
    # (hex: the simulator bills a text as its characters / 4, which o200k_base counts
    # above, as a real provider's tokenizer would: no overrun to muddle the figures)
    text = " ".join(uuid.uuid4().hex for _ in range(600))
    return [{"role": "user", "content": text}]


def worst(gw: GatewayHarness, body: dict[str, Any], *, bound: bool, ceiling: int) -> WorstCase:
    route = gw.gateway.models.get(MODEL)
    assert route is not None
    assert route.price is not None
    if bound:
        with counting_with(BYTE_BOUND):
            counted = tokens.count_chat_input(MODEL, body)
    else:
        counted = tokens.count_chat_input(MODEL, body)
    return worst_case(
        route.price,
        input_tokens=input_upper_bound(counted.tokens, route.price.max_input_tokens),
        input_exact=counted.exact and not bound,
        ceiling=ceiling,
        choices=1,
        cache_write=True,
        cache_write_1h=True,
    )


def cost(w: WorstCase, ceiling: int) -> int:
    return w.amount(Unit.NANOS, ceiling)


def set_limit(gw: GatewayHarness, user: str, nanos: int) -> None:
    usd = Decimal(nanos) / Decimal(10**9)
    gw.call(gw.gateway.budget_service.set_limit(f"b-{user}", f"{usd:.9f}", None))


def send(gw: GatewayHarness, user: str, body: dict[str, Any]) -> Any:
    secret = gw.create_key(name=user, user=user)
    with openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0) as client:
        return client.chat.completions.with_raw_response.create(
            model=MODEL, messages=body["messages"], max_tokens=CEILING
        )


def remaining(raw: Any) -> int:
    shown = raw.headers["x-spendgate-budget-remaining"]
    assert shown.endswith(" USD")
    return int(Decimal(shown.removesuffix(" USD")) * 10**9)


def settled(gw: GatewayHarness, user: str) -> None:
    gw.call(gw.gateway.settled())
    (found,) = [v for v in gw.call(gw.gateway.budget_service.overview(f"b-{user}"))]
    assert found.state.reserved == 0  # nothing held once the request settled
    (row,) = gw.ledger(gw.last_key_id)
    assert found.state.spent == row.cost_nanos > 0  # charged its real usage, once
    assert found.overruns == 0  # never above what it reserved
    assert row.clamped_from is None


def test_the_bound_is_held_when_it_fits_with_room_to_spare(gw: GatewayHarness) -> None:
    body = {"model": MODEL, "messages": messages(), "max_tokens": CEILING}
    bound, exact = (
        worst(gw, body, bound=True, ceiling=CEILING),
        worst(gw, body, bound=False, ceiling=CEILING),
    )
    assert bound.input_tokens > exact.input_tokens  # looser: a token per byte
    raw = send(gw, "roomy", body)
    assert raw.http_response.status_code == 200
    # what is left while it is in flight: the limit less the bound's worst case
    assert abs(remaining(raw) - (10 * 10**9 - cost(bound, CEILING))) <= 1_000
    assert "x-spendgate-output-clamped" not in raw.headers
    settled(gw, "roomy")


def test_a_body_only_its_exact_count_fits_is_admitted_as_without_the_bound(
    gw: GatewayHarness,
) -> None:
    body = {"model": MODEL, "messages": messages(), "max_tokens": CEILING}
    exact = worst(gw, body, bound=False, ceiling=CEILING)
    bound = worst(gw, body, bound=True, ceiling=MIN_OUTPUT)
    limit = cost(exact, CEILING) + 50_000  # the exact worst case, and a little
    assert cost(bound, MIN_OUTPUT) > limit  # the bound fits not even the least output
    set_limit(gw, "exact-only", limit)
    raw = send(gw, "exact-only", body)
    assert raw.http_response.status_code == 200
    assert "x-spendgate-output-clamped" not in raw.headers
    assert abs(remaining(raw) - (limit - cost(exact, CEILING))) <= 1_000
    settled(gw, "exact-only")


def test_a_bound_that_would_be_clamped_is_given_back_and_the_body_counted(
    gw: GatewayHarness,
) -> None:
    body = {"model": MODEL, "messages": messages(), "max_tokens": CEILING}
    exact = worst(gw, body, bound=False, ceiling=CEILING)
    bound = worst(gw, body, bound=True, ceiling=CEILING)
    # the bound affords some output but not all 100 tokens: it would be clamped
    limit = (cost(bound, MIN_OUTPUT) + cost(bound, CEILING)) // 2
    assert cost(exact, CEILING) < limit < cost(bound, CEILING)
    set_limit(gw, "bound-clamped", limit)
    raw = send(gw, "bound-clamped", body)
    assert raw.http_response.status_code == 200
    assert "x-spendgate-output-clamped" not in raw.headers  # the exact count fits whole
    assert abs(remaining(raw) - (limit - cost(exact, CEILING))) <= 1_000
    settled(gw, "bound-clamped")
    assert gw.sim.records[-1].body["max_tokens"] == CEILING  # sent as asked


def test_a_bound_only_a_shadow_limit_would_block_is_not_reported_as_blocked(
    gw: GatewayHarness,
) -> None:
    body = {"model": MODEL, "messages": messages(), "max_tokens": CEILING}
    exact = worst(gw, body, bound=False, ceiling=CEILING)
    bound = worst(gw, body, bound=True, ceiling=CEILING)
    assert exact.amount(Unit.TOKENS, CEILING) < SHADOW_TOKENS < bound.amount(Unit.TOKENS, CEILING)
    raw = send(gw, "shadowed", body)
    assert raw.http_response.status_code == 200
    assert "x-spendgate-shadow-blocked" not in raw.headers
    gw.call(gw.gateway.settled())
    (row,) = gw.ledger(gw.last_key_id)
    assert row.shadow_blocks == ()
