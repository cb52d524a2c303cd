"""Calendar resets in the configured time zone, driven by an injected clock.

The gateway runs on a `ManualClock`; each budget fits one request (~46k of a $0.0001
limit, the next one's worst case ~66k does not fit), so "admitted again" means "the
window turned over". Daily in America/Los_Angeles across the spring-forward night (a
23-hour day), monthly from the 15th and weekly from Sunday in Europe/Berlin across the
autumn fall-back, and a rolling hour whose spend leaves only with its whole bucket.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openai

from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.services.budgets import BudgetView

PROMPT = [{"role": "user", "content": "One small request, please."}]
LIMIT = "0.0001"  # one request (~46k nano-dollars) fits, a second (~66k worst case) does not
SIM = {"x-sim-output-tokens": "75"}
MS = timedelta(milliseconds=1)
LA = ZoneInfo("America/Los_Angeles")
BERLIN = ZoneInfo("Europe/Berlin")


@contextmanager
def gateway(
    tmp_path: Path, clock: ManualClock, settings: dict[str, Any], budgets: list[dict[str, Any]]
) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = budgets
        data["budget_settings"] = {**settings, "min_output_tokens": 100}

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure, clock=clock).start()
    try:
        yield harness
    finally:
        harness.stop()


class Caller:
    def __init__(self, gw: GatewayHarness, user: str) -> None:
        self.gw = gw
        self.client = openai.OpenAI(
            api_key=gw.create_key(name=user, user=user),
            base_url=gw.openai_base_url,
            max_retries=0,
        )
        self.refusals: list[str] = []

    def admitted(self) -> bool:
        try:
            self.client.chat.completions.create(
                model="gpt-4o-mini", messages=PROMPT, max_tokens=100, extra_headers=SIM
            )
        except openai.RateLimitError as exc:
            refusal = exc
        else:
            return True
        assert refusal.code == "insufficient_quota"
        self.refusals.append(refusal.message)
        return False

    def close(self) -> None:
        self.client.close()


def the_view(gw: GatewayHarness, name: str) -> BudgetView:
    (view,) = gw.call(gw.gateway.budget_service.overview(name))
    return view


def local(zone: ZoneInfo, *parts: int) -> datetime:
    return datetime(*parts, tzinfo=zone).astimezone(UTC)  # type: ignore[misc]


def test_daily_budget_resets_at_local_midnight_in_los_angeles(tmp_path: Path) -> None:
    # Saturday 2025-03-08, 22:00 PST; the next night (Sunday) clocks spring forward
    clock = ManualClock(local(LA, 2025, 3, 8, 22, 0))
    budgets = [
        {"name": "la-daily", "scope": "user", "match": "ana", "limit_usd": LIMIT, "period": "daily"}
    ]
    settings = {"timezone": "America/Los_Angeles"}
    with gateway(tmp_path, clock, settings, budgets) as gw:
        caller = Caller(gw, "ana")
        try:
            midnight = local(LA, 2025, 3, 9, 0, 0)
            assert midnight == datetime(2025, 3, 9, 8, 0, tzinfo=UTC)  # PST: UTC-8
            assert caller.admitted()
            assert not caller.admitted()
            view = the_view(gw, "la-daily")
            assert view.state.ref.window.resets_at == midnight
            assert view.to_json()["resets_at"] == "2025-03-09T08:00:00+00:00"
            assert "It resets at 2025-03-09T00:00:00-08:00" in caller.refusals[-1]

            clock.set(midnight - MS)  # 23:59:59.999 local
            assert not caller.admitted()
            clock.set(midnight)
            assert caller.admitted()
            assert not caller.admitted()

            # Sunday is 23 hours long: the next reset is 00:00 PDT, 07:00 UTC
            next_midnight = local(LA, 2025, 3, 10, 0, 0)
            assert next_midnight == datetime(2025, 3, 10, 7, 0, tzinfo=UTC)
            assert next_midnight - midnight == timedelta(hours=23)
            view = the_view(gw, "la-daily")
            assert view.state.ref.window.since == midnight
            assert view.state.ref.window.resets_at == next_midnight
            assert "It resets at 2025-03-10T00:00:00-07:00" in caller.refusals[-1]
            clock.set(next_midnight - MS)
            assert not caller.admitted()
            clock.set(next_midnight)
            assert caller.admitted()
            assert the_view(gw, "la-daily").state.spent < the_view(gw, "la-daily").state.limit
        finally:
            caller.close()


BERLIN_SETTINGS = {"timezone": "Europe/Berlin", "week_start": "sunday", "month_start_day": 15}


def test_monthly_budget_resets_on_the_15th_in_berlin(tmp_path: Path) -> None:
    clock = ManualClock(local(BERLIN, 2025, 10, 14, 12, 0))
    budgets = [
        {
            "name": "de-monthly",
            "scope": "user",
            "match": "jo",
            "limit_usd": LIMIT,
            "period": "monthly",
        }
    ]
    with gateway(tmp_path, clock, BERLIN_SETTINGS, budgets) as gw:
        caller = Caller(gw, "jo")
        try:
            assert caller.admitted()
            assert not caller.admitted()
            window = the_view(gw, "de-monthly").state.ref.window
            assert window.since == datetime(2025, 9, 14, 22, 0, tzinfo=UTC)  # 15 Sep 00:00 CEST
            reset = datetime(2025, 10, 14, 22, 0, tzinfo=UTC)  # 15 Oct 00:00 CEST
            assert window.resets_at == reset
            assert "It resets at 2025-10-15T00:00:00+02:00" in caller.refusals[-1]
            clock.set(reset - MS)
            assert not caller.admitted()
            clock.set(reset)
            assert caller.admitted()
            # the next one is after the clocks go back: 15 Nov 00:00 CET
            window = the_view(gw, "de-monthly").state.ref.window
            assert window.resets_at == datetime(2025, 11, 14, 23, 0, tzinfo=UTC)
            clock.set(datetime(2025, 11, 14, 22, 59, 59, tzinfo=UTC))
            assert not caller.admitted()
            clock.set(datetime(2025, 11, 14, 23, 0, tzinfo=UTC))
            assert caller.admitted()
        finally:
            caller.close()


def test_weekly_budget_resets_on_sunday_in_berlin(tmp_path: Path) -> None:
    # Saturday 2025-10-25, 20:00 CEST; clocks fall back early on Sunday
    clock = ManualClock(local(BERLIN, 2025, 10, 25, 20, 0))
    budgets = [
        {
            "name": "de-weekly",
            "scope": "user",
            "match": "max",
            "limit_usd": LIMIT,
            "period": "weekly",
        }
    ]
    with gateway(tmp_path, clock, BERLIN_SETTINGS, budgets) as gw:
        caller = Caller(gw, "max")
        try:
            assert caller.admitted()
            assert not caller.admitted()
            window = the_view(gw, "de-weekly").state.ref.window
            assert window.since == datetime(2025, 10, 18, 22, 0, tzinfo=UTC)  # Sun 19 Oct CEST
            sunday = datetime(2025, 10, 25, 22, 0, tzinfo=UTC)  # Sun 26 Oct 00:00 CEST
            assert window.resets_at == sunday
            clock.set(sunday - MS)
            assert not caller.admitted()
            clock.set(sunday)
            assert caller.admitted()
            window = the_view(gw, "de-weekly").state.ref.window
            # a week of 7 days and 1 hour: the next Sunday midnight is CET
            assert window.resets_at == datetime(2025, 11, 1, 23, 0, tzinfo=UTC)
            assert window.resets_at - sunday == timedelta(days=7, hours=1)
            clock.set(datetime(2025, 10, 30, 12, 0, tzinfo=UTC))  # midweek: still this week
            assert not caller.admitted()
        finally:
            caller.close()


def test_rolling_hour_frees_spend_only_when_its_bucket_leaves(tmp_path: Path) -> None:
    # buckets of 1h/24 = 150 s; t0 starts one
    t0 = datetime(2025, 5, 1, 10, 0, tzinfo=UTC)
    clock = ManualClock(t0 + timedelta(seconds=10))
    budgets = [
        {
            "name": "hourly-roll",
            "scope": "user",
            "match": "ro",
            "limit_usd": LIMIT,
            "period": "rolling:1h",
        }
    ]
    with gateway(tmp_path, clock, {"timezone": "Asia/Tokyo"}, budgets) as gw:
        caller = Caller(gw, "ro")
        try:
            assert caller.admitted()  # spent at t0 + 10 s, in the bucket [t0, t0 + 150 s)
            assert not caller.admitted()
            clock.set(t0 + timedelta(minutes=30))
            assert not caller.admitted()
            clock.set(t0 + timedelta(hours=1, seconds=10))  # an hour after the spend...
            assert not caller.admitted()  # ...but its bucket still counts, in full
            leaves = t0 + timedelta(hours=1, seconds=150)
            clock.set(leaves - MS)
            assert not caller.admitted()
            assert the_view(gw, "hourly-roll").state.spent > 0
            clock.set(leaves)
            assert the_view(gw, "hourly-roll").state.spent == 0
            assert caller.admitted()
            assert not caller.admitted()
        finally:
            caller.close()
