"""The status line's summary of a /v1/spendgate/me answer (pure)."""

from __future__ import annotations

from datetime import date
from typing import Any

from spendgate.cli.statusline import base_url, summarize


def _budget(name: str, remaining: int, limit: int, **extra: Any) -> dict[str, Any]:
    used_bp = (limit - remaining) * 10_000 // limit
    return {
        "name": name,
        "kind": "budget",
        "unit": "usd",
        "limit": limit,
        "remaining": remaining,
        "used_bp": used_bp,
        "state": "ok",
        **extra,
    }


def test_the_tightest_budget_by_share_left_is_shown() -> None:
    data = {
        "budgets": [
            _budget("team-ml", 50 * 10**9, 100 * 10**9),
            _budget("mine", 1_500_000_000, 10 * 10**9, state="soft"),
            {"name": "rpm", "kind": "limit", "unit": "requests", "limit": 60, "remaining": 0},
        ]
    }
    assert summarize(data) == "sg $1.50 left of $10.00 · mine · 85% used · soft"


def test_a_forecast_reaching_the_cap_before_the_reset_is_shown() -> None:
    forecast = {"exceeds": True, "cap_at": "2026-03-10T17:42:00+00:00"}
    data = {"budgets": [_budget("mine", 10**9, 2 * 10**9, forecast=forecast)]}
    shown = summarize(data, today=date(2026, 3, 10))
    assert shown == "sg $1.00 left of $2.00 · mine · 50% used · cap ~17:42Z"


def test_a_cap_on_another_day_shows_its_date() -> None:
    """A monthly budget's cap nine days away read as "cap ~17:42Z", as if it were today."""
    forecast = {"exceeds": True, "cap_at": "2026-03-19T17:42:00+00:00"}
    data = {"budgets": [_budget("mine", 10**9, 2 * 10**9, forecast=forecast)]}
    shown = summarize(data, today=date(2026, 3, 10))
    assert shown == "sg $1.00 left of $2.00 · mine · 50% used · cap ~03-19 17:42Z"


def test_tokens_and_no_budget() -> None:
    tokens = {**_budget("tok", 1_000, 5_000), "unit": "tokens"}
    assert summarize({"budgets": [tokens]}) == "sg 1,000 tok left of 5,000 tok · tok · 80% used"
    assert summarize({"budgets": []}) == "sg: no budget"
    assert base_url("http://gw:8700/v1/") == "http://gw:8700"


def test_a_budget_frozen_at_zero_is_the_tightest() -> None:
    """A limit set to 0 at run time (the team frozen): every request is refused, and the
    line left it out for another budget's room ("sg $50.00 left of $100.00")."""
    frozen = {**_budget("team-ml", 1, 1), "limit": 0, "remaining": -120, "used_bp": 10_000}
    frozen["state"] = "exhausted"
    data = {"budgets": [_budget("per-user", 50 * 10**9, 100 * 10**9), frozen]}
    assert summarize(data) == "sg $0.00 left of $0.00 · team-ml · 100% used · exhausted"


def test_an_overrun_shows_its_negative_room_with_the_sign_first() -> None:
    over = _budget("team-ml", -1_500_000_000, 10 * 10**9)
    assert summarize({"budgets": [over]}).startswith("sg -$1.50 left of $10.00 · team-ml")
