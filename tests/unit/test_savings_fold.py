"""The savings fold (spendgate.domain.savings): actual against counterfactual cost per team
or service, counts of rerouted and fallen-back requests, shadow rules' would-be savings.
Exact numbers on a fixed set of ledger rows."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import UTC, datetime
from typing import Any

import pytest

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.savings import (
    CSV_HEADER,
    Savings,
    SavingsBy,
    SavingsGroup,
    ShadowSavings,
    request_of,
    savings,
    to_csv,
)

TS = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)


def row(request_id: str, cost: int, **fields: Any) -> LedgerRow:
    base = LedgerRow(
        request_id=request_id,
        ts=TS,
        surface="openai.chat",
        key_id="key_1",
        user=None,
        service=None,
        team=None,
        org=None,
        tags=(),
        requested_model="gpt-4o",
        served_model="gpt-4o",
        provider="openai",
        input_tokens=10,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=10,
        reasoning_tokens=0,
        cost_nanos=cost,
        status=200,
        latency_ms=1.0,
        ttfb_ms=None,
        streamed=False,
        client_disconnected=False,
        usage_estimated=False,
    )
    return dataclasses.replace(base, **fields)


WORKLOAD = [
    # web: a rewrite (2500 -> 150), an alias (no change of price), one asked by name.
    row("r1", 150, team="web", service="chat", route_kind="rewrite", baseline_cost_nanos=2500),
    row("r2", 100, team="web", service="chat", route_kind="alias"),
    row("r3", 300, team="web", service="search"),
    # ml: a downgrade (800 -> 200); a request whose first attempt failed at a cost of 40
    # and a fallback (a cheaper model) answered: 50 instead of 500.
    row("r4", 200, team="ml", service="chat", route_kind="downgrade", baseline_cost_nanos=800),
    row("r5", 40, team="ml", service="batch", status=502),
    row("r5-1", 50, team="ml", service="batch", attempt=1, baseline_cost_nanos=500),
    # platform: a rewritten request whose rewritten model failed twice over, then a dearer
    # fallback answered: counted once as rewritten and once as fallen back; it lost money.
    row("r6", 0, team="platform", route_kind="rewrite", status=503, baseline_cost_nanos=0),
    row("r6-1", 0, team="platform", route_kind="rewrite", status=500, attempt=1),
    row("r6-2", 900, team="platform", route_kind="rewrite", attempt=2, baseline_cost_nanos=600),
    # no team: a failed fallback (status >= 400 on attempt 1) does not count as fallen back.
    row("r7", 0, status=503),
    row("r7-1", 70, status=429, attempt=1, baseline_cost_nanos=30),
    # refused before the call: never counted, whatever it "would cost".
    row("r8", 0, team="web", blocked_by="web-daily", would_cost_nanos=99_999),
    # shadow rules: what a rule would have served instead.
    row("r9", 1000, team="web", shadow_rule="cheap-web", shadow_cost_nanos=100),
    row("r10", 500, team="web", shadow_rule="cheap-web", shadow_cost_nanos=None),
    row("r11", 400, team="ml", shadow_rule="ml-down", shadow_cost_nanos=100),
    row("r11-1", 200, team="ml", shadow_rule="ml-down", shadow_cost_nanos=50, attempt=1),
]


@pytest.fixture
def by_team() -> Savings:
    return savings(WORKLOAD, SavingsBy.TEAM)


def _price_only(group: SavingsGroup) -> SavingsGroup:
    """The group without its shadow and spend figures (checked on their own below)."""
    return dataclasses.replace(
        group, shadow_cost_nanos=0, capped_counterfactual_nanos=0, shadow_spend_saved_nanos=0
    )


def test_each_team_s_actual_and_counterfactual_cost(by_team: Savings) -> None:
    assert {g.group: _price_only(g) for g in by_team.groups} == {
        "web": SavingsGroup(
            group="web",
            requests=5,  # r1 r2 r3 r9 r10 (r8 was refused)
            cost_nanos=150 + 100 + 300 + 1000 + 500,
            counterfactual_nanos=2500 + 100 + 300 + 1000 + 500,
            aliased=1,
            rewritten=1,
        ),
        "ml": SavingsGroup(
            group="ml",
            requests=3,  # r4 r5 r11, each however many attempts it took
            cost_nanos=200 + 40 + 50 + 400 + 200,
            counterfactual_nanos=800 + 40 + 500 + 400 + 200,
            downgraded=1,
            fell_back=2,  # r5 and r11 were answered by attempt 1
        ),
        "platform": SavingsGroup(
            group="platform",
            requests=1,
            cost_nanos=900,
            counterfactual_nanos=0 + 0 + 600,
            rewritten=1,
            fell_back=1,
        ),
        None: SavingsGroup(group=None, requests=1, cost_nanos=70, counterfactual_nanos=30),
    }


def test_without_budgets_spend_figures_are_the_price_figures(by_team: Savings) -> None:
    figures = {
        g.group: (g.spend_saved_nanos, g.shadow_price_saved_nanos, g.shadow_spend_saved_nanos)
        for g in by_team.groups
    }
    # web: cheap-web would have served r9 r10 (1500) for 600; ml: ml-down r11's 600 for 150
    assert figures == {
        "web": (2350, 900, 900),
        "ml": (1050, 450, 450),
        "platform": (-300, 0, 0),
        None: (-40, 0, 0),
    }
    assert all(not g.budget_bound for g in by_team.groups)


def test_saved_and_its_share(by_team: Savings) -> None:
    saved = {g.group: (g.saved_nanos, g.saved_bp) for g in by_team.groups}
    assert saved == {
        "web": (2350, 5341),  # 2350 / 4400 = 53.409 %
        "ml": (1050, 5412),  # 1050 / 1940 = 54.124 %
        "platform": (-300, -5000),  # a dearer fallback: -300 / 600
        None: (-40, -13333),  # -40 / 30 = -133.33 %
    }


def test_groups_are_ranked_by_what_they_saved(by_team: Savings) -> None:
    assert [g.group for g in by_team.groups] == ["web", "ml", None, "platform"]


def test_the_total_adds_every_group_up(by_team: Savings) -> None:
    total = by_team.total
    assert _price_only(total) == SavingsGroup(
        group=None,
        requests=10,
        cost_nanos=2050 + 890 + 900 + 70,
        counterfactual_nanos=4400 + 1940 + 600 + 30,
        aliased=1,
        rewritten=2,
        downgraded=1,
        fell_back=3,
    )
    assert total.saved_nanos == 6970 - 3910 == 3060
    assert total.saved_bp == 4390  # 3060 / 6970 = 43.90 %


def test_shadow_rules_would_have_saved(by_team: Savings) -> None:
    assert by_team.shadow == (
        ShadowSavings(rule="cheap-web", requests=2, cost_nanos=1500, shadow_cost_nanos=600),
        ShadowSavings(rule="ml-down", requests=1, cost_nanos=600, shadow_cost_nanos=150),
    )
    assert [(s.would_save_nanos, s.would_save_bp) for s in by_team.shadow] == [
        (900, 6000),
        (450, 7500),
    ]


def test_by_service() -> None:
    report = savings(WORKLOAD, SavingsBy.SERVICE)
    assert [(g.group, g.requests, g.cost_nanos, g.counterfactual_nanos) for g in report.groups] == [
        ("chat", 3, 450, 3400),
        ("batch", 1, 90, 540),
        ("search", 1, 300, 300),
        (None, 5, 3070, 2730),  # r6 r7 r9 r10 r11: no service
    ]
    assert report.total == savings(WORKLOAD, SavingsBy.TEAM).total


def test_an_empty_period_saves_nothing_and_divides_by_nothing() -> None:
    report = savings([], SavingsBy.TEAM)
    assert report == Savings(groups=(), total=SavingsGroup(group=None), shadow=())
    assert report.total.saved_bp == 0
    free = savings([row("f", 0, team="web")], SavingsBy.TEAM).total
    assert (free.requests, free.saved_nanos, free.saved_bp) == (1, 0, 0)


def test_a_row_charged_at_its_reservation_saves_nothing() -> None:
    """A lapsed reservation's row keeps the zero baseline and shadow costs of its empty
    template; its charge is not measured usage, so it counts the same on both sides."""
    lapsed = row(
        "l1",
        700,
        team="web",
        route_kind="rewrite",
        baseline_cost_nanos=0,
        shadow_rule="cheap-web",
        shadow_cost_nanos=0,
        unreconciled=True,
    )
    report = savings([lapsed, row("l2", 100, team="web", baseline_cost_nanos=400)], SavingsBy.TEAM)
    assert (report.total.cost_nanos, report.total.counterfactual_nanos) == (800, 1100)
    assert report.total.rewritten == 1
    assert report.shadow == (ShadowSavings("cheap-web", 1, 700, 700),)


def test_a_fallback_row_belongs_to_its_request() -> None:
    assert request_of(row("req_ab-2", 0, attempt=2)) == "req_ab"
    assert request_of(row("req_ab", 0)) == "req_ab"
    # Only the attempt's own suffix is stripped.
    assert request_of(row("req_ab-1", 0, attempt=2)) == "req_ab-1"


def test_csv_has_one_line_per_group_in_order(by_team: Savings) -> None:
    lines = list(csv.reader(io.StringIO(to_csv(by_team.groups))))
    assert tuple(lines[0]) == CSV_HEADER
    assert [line[10:] for line in lines[1:3]] == [
        ["0.000004400", "0.000002350", "0.000001150", "0.000000900", "0.000000900", "0", "0", ""],
        ["0.000001940", "0.000001050", "0.000000440", "0.000000450", "0.000000450", "0", "0", ""],
    ]
    assert [line[:10] for line in lines[1:]] == [
        ["web", "5", "0.000002050", "0.000004400", "0.000002350", "5341", "1", "1", "0", "0"],
        ["ml", "3", "0.000000890", "0.000001940", "0.000001050", "5412", "0", "0", "1", "2"],
        ["", "1", "0.000000070", "0.000000030", "-0.000000040", "-13333", "0", "0", "0", "0"],
        [
            "platform",
            "1",
            "0.000000900",
            "0.000000600",
            "-0.000000300",
            "-5000",
            "0",
            "1",
            "0",
            "1",
        ],
    ]
