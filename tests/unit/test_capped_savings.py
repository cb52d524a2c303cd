"""The spend figures of `spendgate.domain.capped` and the refusal fold of
`spendgate.domain.refusals`, on fixed rows: nested budgets cap the counterfactual in
arrival order, a bound member saves nothing of spend, a shadow prediction counts the
refused requests made cheaper, retries and resends count once. Exact numbers."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

from spendgate.domain.budgets import Budget, BudgetScope, Kind, Scoped, Unit
from spendgate.domain.capped import capped_rows, caps
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.periods import Calendar, Period, window
from spendgate.domain.refusals import (
    DEFAULT_OUTPUT_TOKENS,
    estimate,
    output_samples,
    refusal_groups,
    repeats,
)
from spendgate.domain.savings import SavingsBy, savings, with_caps

TS = datetime(2026, 11, 30, 9, tzinfo=UTC)
UTC_CALENDAR = Calendar.of("UTC")
_ids = iter(range(1_000_000))


def budget(name: str, scope: BudgetScope, limit: int, **fields: Any) -> Budget:
    target = Scoped(scope, "*", ())
    return Budget(name, target, Unit.NANOS, limit, Period.parse("daily"), True, (), **fields)


def row(cost: int, **fields: Any) -> LedgerRow:
    base = LedgerRow(
        request_id=f"r{next(_ids)}",
        ts=TS,
        surface="openai.chat",
        key_id=f"key-{fields.get('user', 'x')}",
        user="ann",
        service=None,
        team="web",
        org=None,
        tags=(),
        requested_model="big",
        served_model="small",
        provider="openai",
        input_tokens=10,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=100,
        reasoning_tokens=0,
        cost_nanos=cost,
        status=200,
        latency_ms=1.0,
        ttfb_ms=None,
        streamed=False,
        client_disconnected=False,
        usage_estimated=False,
        routed_model="small",
    )
    return dataclasses.replace(base, **fields)


def test_only_hard_enforced_dollar_budgets_on_a_calendar_cap() -> None:
    kept = budget("kept", BudgetScope.USER, 1)
    soft = dataclasses.replace(kept, name="soft", hard=False)
    shadow = dataclasses.replace(kept, name="shadow", shadow=True)
    tokens = dataclasses.replace(kept, name="tokens", unit=Unit.TOKENS)
    limit = dataclasses.replace(kept, name="limit", kind=Kind.LIMIT)
    rolling = dataclasses.replace(kept, name="rolling", period=Period.parse("rolling:24h"))
    assert caps([kept, soft, shadow, tokens, limit, rolling]) == (kept,)


def test_nested_budgets_cap_in_arrival_order() -> None:
    per_user = budget("per-user", BudgetScope.USER, 500)
    per_team = budget("per-team", BudgetScope.TEAM, 700)
    rows = [
        row(100, user="ann", baseline_cost_nanos=300, ts=TS),
        row(100, user="ann", baseline_cost_nanos=300, ts=TS + timedelta(seconds=1)),
        row(100, user="bob", baseline_cost_nanos=300, ts=TS + timedelta(seconds=2)),
        row(100, user="bob", baseline_cost_nanos=300, ts=TS + timedelta(seconds=3)),
    ]
    out = capped_rows(rows, [per_user, per_team], UTC_CALENDAR)
    # ann: 300, then 200 (her 500); bob: 200 (the team's 700 less 500), then nothing
    assert [c.capped_counterfactual_nanos for c in out] == [300, 200, 200, 0]
    assert [sorted(k[0] for k in c.capped) for c in out] == [
        [],
        ["per-user"],
        ["per-team"],
        ["per-team"],  # bob's own 500 had room for 300 more; the team's had none
    ]
    folded = with_caps(savings(rows, SavingsBy.TEAM), out, SavingsBy.TEAM)
    (web,) = folded.groups
    assert (web.price_saved_nanos, web.spend_saved_nanos) == (800, 700 - 400)
    assert web.capped_members == 2  # ann's day, the team's day
    assert folded.total.capped_members == 2
    # an override in force replaces the configured limit
    raised = capped_rows(rows, [per_user], UTC_CALENDAR, {"per-user": 10_000})
    assert sum(c.capped_counterfactual_nanos for c in raised) == 1200


def test_a_member_its_budget_refused_saved_nothing_of_spend() -> None:
    per_user = budget("per-user", BudgetScope.USER, 1_000)
    rows = [
        row(300, baseline_cost_nanos=900),
        row(300, baseline_cost_nanos=900),
        row(300, baseline_cost_nanos=900),
        row(0, blocked_by="per-user", status=429),
    ]
    out = capped_rows(rows, [per_user], UTC_CALENDAR)
    # spent 900 of its 1,000 and refused: the cap is the 900 it spent, not the limit
    assert sum(c.capped_counterfactual_nanos for c in out) == 900
    day = window(per_user.period, TS, UTC_CALENDAR).bucket_ms
    assert [c.bound for c in out] == [frozenset({("per-user", "ann", day)})] * 3
    folded = with_caps(savings(rows, SavingsBy.TEAM), out, SavingsBy.TEAM)
    (web,) = folded.groups
    assert (web.price_saved_nanos, web.spend_saved_nanos, web.bound_members) == (1800, 0, 1)
    assert web.bound_budgets == ("per-user",)
    # the next day is another member-window: its limit is whole again
    tomorrow = row(300, baseline_cost_nanos=900, ts=TS + timedelta(days=1))
    later = capped_rows([*rows, tomorrow], [per_user], UTC_CALENDAR)
    assert later[-1].capped_counterfactual_nanos == 900
    assert later[-1].bound == frozenset()


def test_a_shadow_prediction_counts_refused_requests_made_cheaper() -> None:
    per_user = budget("per-user", BudgetScope.USER, 1_000)
    asked = dict(routed_model="big", shadow_rule="try-small", shadow_model="small")
    served = row(1_000, shadow_cost_nanos=250, output_tokens=100, **asked)
    refused = [
        row(
            0,
            blocked_by="per-user",
            status=429,
            routed_model="big",
            fingerprint=f"f{i}",
            would_input_nanos=0,
            would_output_rate=10_000_000,  # $0.01/M: 100 tokens cost 1,000
            would_ceiling=200,
        )
        for i in range(2)
    ]
    samples = output_samples([served], [("key-x", "big")])
    assert samples == {("key-x", "big"): [100], (None, "big"): [100]}
    assert [estimate(r, samples) for r in refused] == [1_000, 1_000]
    (out,) = capped_rows([served, *refused], [per_user], UTC_CALENDAR, samples=samples)
    # routed: 250 served + 2 x 1,000 x 250/1,000 refused = 750 < the 1,000 it spent
    assert out.shadow_spend_saved_nanos == 1_000 - 750
    # with five refusals the routed world would have spent it all: nothing saved
    more = [
        dataclasses.replace(refused[0], request_id=f"m{i}", fingerprint=f"m{i}") for i in range(5)
    ]
    (out,) = capped_rows([served, *more], [per_user], UTC_CALENDAR, samples=samples)
    assert out.shadow_spend_saved_nanos == 0


def test_retries_and_resends_are_one_request() -> None:
    first = row(0, blocked_by="rl", status=429, fingerprint="f", would_cost_nanos=50)
    retried = dataclasses.replace(first, request_id="r-retry", retry_count=1)
    resent = dataclasses.replace(first, request_id="r-resent", ts=TS + timedelta(seconds=4))
    chained = dataclasses.replace(first, request_id="r-chained", ts=TS + timedelta(seconds=8))
    later = dataclasses.replace(first, request_id="r-later", ts=TS + timedelta(seconds=14))
    other = dataclasses.replace(first, request_id="r-other", fingerprint="g")
    attempt = dataclasses.replace(first, request_id=f"{first.request_id}-1", attempt=1)
    rows = [first, retried, resent, chained, later, other, attempt]
    assert repeats(rows) == {"r-retry", "r-resent", "r-chained", attempt.request_id}
    (group,) = refusal_groups(rows, {})
    assert (group.refusals, group.distinct) == (7, 3)
    assert (group.worst_case_nanos, group.distinct_worst_case_nanos) == (350, 150)
    # rows from before estimates were recorded count at their worst case
    assert group.estimate_nanos == 150


def test_the_typical_output_falls_back_to_the_model_then_the_default() -> None:
    refused = row(
        0, blocked_by="b", key_id="k9", would_input_nanos=5, would_output_rate=1_000_000
    )  # $1/M: a nano a token
    assert estimate(refused, {}) == 5 + DEFAULT_OUTPUT_TOKENS
    assert estimate(refused, {(None, "small"): [3_000, 1_000, 2_000, 4_000]}) == 5 + 2_000
    assert estimate(refused, {("k9", "small"): [9_000], (None, "small"): [1]}) == 5 + 9_000
    ceiling = dataclasses.replace(refused, would_ceiling=700)
    assert estimate(ceiling, {("k9", "small"): [9_000]}) == 5 + 700
