"""Top-spender shares, CSV and JSON exports: exact integers, no floats."""

from __future__ import annotations

import json
import random

import pytest

from spendgate.domain.reports import (
    CSV_HEADER,
    format_bp,
    share_bp,
    to_csv,
    to_json,
    top_spenders,
)
from spendgate.money import NANOS_PER_DOLLAR
from spendgate.storage import UsageGroup


def group(name: str | None, dollars: int, requests: int = 10, **counts: int) -> UsageGroup:
    fields = {
        "input_tokens": 1_000,
        "cached_input_tokens": 100,
        "cache_write_tokens": 10,
        "output_tokens": 500,
        "reasoning_tokens": 50,
        "errors": 1,
        "estimated": 0,
        **counts,
    }
    return UsageGroup(
        group=name, requests=requests, cost_nanos=dollars * NANOS_PER_DOLLAR, **fields
    )


def seed_story() -> list[UsageGroup]:
    """100 developers; 15 heavy ones spend $15..$29 ($330), 85 others $2 each ($170)."""
    heavy = [group(f"heavy{i:02d}", 15 + i) for i in range(15)]
    light = [group(f"light{i:02d}", 2) for i in range(85)]
    everyone = heavy + light
    random.Random(7).shuffle(everyone)
    return everyone


def test_fifteen_heavy_users_of_a_hundred_drive_two_thirds() -> None:
    report = top_spenders(seed_story(), 15)

    assert [r.usage.group for r in report.top] == [f"heavy{i:02d}" for i in range(14, -1, -1)]
    assert [r.rank for r in report.top] == list(range(1, 16))
    assert [r.share_bp for r in report.top] == [(15 + i) * 20 for i in range(14, -1, -1)]
    assert report.total_cost_nanos == 500 * NANOS_PER_DOLLAR
    assert (report.top_share_bp, report.rest_share_bp) == (6_600, 3_400)
    assert report.rest_groups == 85
    assert report.total_groups == 100
    assert report.rest.group is None
    assert report.rest.cost_nanos == 170 * NANOS_PER_DOLLAR
    assert (report.rest.requests, report.rest.input_tokens, report.rest.errors) == (
        850,
        85_000,
        85,
    )


def test_top_n_beyond_the_groups_leaves_an_empty_rest() -> None:
    report = top_spenders([group("a", 3), group("b", 1)], 10)
    assert [r.share_bp for r in report.top] == [7_500, 2_500]
    assert (report.rest_groups, report.rest.cost_nanos, report.rest_share_bp) == (0, 0, 0)


def test_top_zero_puts_everyone_in_the_rest() -> None:
    report = top_spenders(seed_story(), 0)
    assert report.top == ()
    assert (report.top_share_bp, report.rest_share_bp, report.rest_groups) == (0, 10_000, 100)


def test_ties_rank_by_name_with_unattributed_last() -> None:
    report = top_spenders([group(None, 5), group("b", 5), group("a", 5), group("c", 9)], 4)
    assert [r.usage.group for r in report.top] == ["c", "a", "b", None]


def test_no_spend_means_zero_shares() -> None:
    report = top_spenders([group("a", 0), group("b", 0)], 1)
    assert report.top[0].share_bp == 0
    assert (report.top_share_bp, report.rest_share_bp) == (0, 0)
    assert top_spenders([], 5).total_groups == 0


def test_negative_n_is_refused() -> None:
    with pytest.raises(ValueError, match="0 or more"):
        top_spenders([], -1)


@pytest.mark.parametrize(
    ("part", "total", "bp"),
    [(1, 3, 3_333), (2, 3, 6_667), (1, 20_000, 1), (1, 20_001, 0), (5, 5, 10_000), (0, 0, 0)],
)
def test_share_rounds_half_up_in_integers(part: int, total: int, bp: int) -> None:
    assert share_bp(part, total) == bp


@pytest.mark.parametrize(("bp", "text"), [(7_342, "73.42%"), (5, "0.05%"), (10_000, "100.00%")])
def test_format_bp(bp: int, text: str) -> None:
    assert format_bp(bp) == text


def test_csv_has_a_header_and_nine_decimal_dollars() -> None:
    groups = [
        UsageGroup("core", 3, 10, 1, 2, 20, 5, 12 * NANOS_PER_DOLLAR + 7, 0, 2),
        UsageGroup(None, 1, 2, 0, 0, 4, 0, 1_234_500, 1, 1),
    ]

    assert to_csv(groups).splitlines() == [
        ",".join(CSV_HEADER),
        "core,3,10,1,2,20,5,12.000000007,0,2,0,0.000000000,0,0.000000000",
        ",1,2,0,0,4,0,0.001234500,1,1,0,0.000000000,0,0.000000000",
    ]
    assert CSV_HEADER[0] == "group"
    assert "cost_usd" in CSV_HEADER


def test_json_carries_exact_nanos_and_dollar_strings() -> None:
    body = to_json(top_spenders(seed_story(), 2))

    assert json.loads(json.dumps(body)) == body
    assert body["total_cost_nanos"] == 500 * NANOS_PER_DOLLAR
    assert body["total_cost_usd"] == "500.000000000"
    assert body["total_groups"] == 100
    assert body["top_share_bp"] == 1_140
    top = body["top"]
    assert isinstance(top, list)
    assert top[0] == {
        "rank": 1,
        "group": "heavy14",
        "requests": 10,
        "input_tokens": 1_000,
        "cached_input_tokens": 100,
        "cache_write_tokens": 10,
        "output_tokens": 500,
        "reasoning_tokens": 50,
        "cost_nanos": 29 * NANOS_PER_DOLLAR,
        "cost_usd": "29.000000000",
        "errors": 1,
        "estimated": 0,
        "blocked": 0,
        "blocked_would_cost_nanos": 0,
        "blocked_would_cost_usd": "0.000000000",
        "retries": 0,
        "retry_cost_nanos": 0,
        "retry_cost_usd": "0.000000000",
        "share_bp": 580,
    }
    rest = body["rest"]
    assert isinstance(rest, dict)
    assert "group" not in rest
    assert (rest["groups"], rest["share_bp"], rest["cost_usd"]) == (98, 8_860, "443.000000000")
