"""What raises an alert (pure): events under an alerts config, the once-keys, backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from spendgate.clock import ManualClock
from spendgate.config import parse_config
from spendgate.config.alerts import AlertsConfig
from spendgate.domain.admission import Admitted, CounterState, Thresholds
from spendgate.domain.alerts import percent, quiet_period, retry_delay
from spendgate.domain.budgets import Budget, BudgetScope, CounterRef, Scoped, Unit
from spendgate.domain.periods import Calendar, Period, window
from spendgate.errors import ConfigError
from spendgate.events import BreakerOpened, SettledAbove, ThresholdCrossed
from spendgate.events.alerts import AlertInbox, alerts_of

AT = datetime(2026, 3, 5, 12, 0, tzinfo=UTC)


def _config(**data: Any) -> AlertsConfig:
    data.setdefault("channels", {"ops": {"kind": "webhook", "url": "http://127.0.0.1:9/x"}})
    return AlertsConfig.model_validate(data)


def _crossed(bp: int, budget: str = "team-ml") -> ThresholdCrossed:
    return ThresholdCrossed(budget, "ml", bp, bp + 10, "req_1", 1_000, 2 * 10**9, "usd", "team")


def test_a_threshold_alert_names_its_budget_member_and_mark() -> None:
    config = _config(budgets=[{"budget": "team-ml", "thresholds": ["0.8"], "channels": ["ops"]}])
    [alert] = alerts_of(_crossed(8000), AT, config)
    assert alert.key == ("threshold", "team-ml", "ml", 1_000, "8000")
    assert alert.channels == ("ops",)
    assert alert.title == "team-ml: ml passed 80% of its limit"
    assert "$2.000000" in alert.text
    assert alerts_of(_crossed(5000), AT, config) == []  # a threshold no rule alerts on
    assert alerts_of(_crossed(8000, "other"), AT, config) == []


def test_notify_member_needs_a_contact() -> None:
    contact = [{"kind": "email", "to": ["ml@example.com"]}]
    config = _config(
        contacts={"team:ml": contact},
        budgets=[{"budget": "*", "thresholds": ["0.8"], "notify_member": True}],
    )
    [alert] = alerts_of(_crossed(8000), AT, config)
    assert alert.contacts == ("team:ml",)
    assert alert.channels == ()
    lonely = _config(budgets=[{"thresholds": ["0.8"], "notify_member": True}])
    assert alerts_of(_crossed(8000), AT, lonely) == []  # nobody to tell


def test_event_alerts_are_keyed_by_their_quiet_interval() -> None:
    config = _config(events=[{"kinds": ["breaker_opened"], "channels": ["ops"], "quiet_s": 600}])
    event = BreakerOpened("k_1", "gpt-4o", 5, 30.0)
    [first] = alerts_of(event, AT, config)
    [same] = alerts_of(event, AT + timedelta(seconds=599), config)
    [later] = alerts_of(event, AT + timedelta(seconds=600), config)
    assert first.key == same.key != later.key
    assert first.key[3] == quiet_period(int(AT.timestamp() * 1000), 600)


def test_the_inbox_only_queues_what_a_rule_wants() -> None:
    clock = ManualClock(AT)
    config = _config(budgets=[{"thresholds": ["0.8"], "channels": ["ops"]}], queue_max=2)
    inbox = AlertInbox(config, clock)
    woken: list[int] = []
    inbox.wake = lambda: woken.append(1)
    inbox(BreakerOpened("k_1", "gpt-4o", 5, 30.0))  # no rule for breakers
    assert not inbox.pending
    for _ in range(3):
        inbox(_crossed(8000))
    assert len(inbox.pending) == 2
    assert inbox.dropped == 1
    assert len(woken) == 2


def test_alert_thresholds_join_the_soft_ones_and_may_reach_the_limit() -> None:
    budget = Budget(
        "team-ml", Scoped(BudgetScope.TEAM, "*", ()), Unit.NANOS, 1_000,
        Period.parse("daily"), True, (8_000,),
    )  # fmt: skip
    span = window(budget.period, AT, Calendar.of("UTC"))
    state = CounterState(CounterRef(budget, "ml", span), 1_000, 900, 0)
    admitted = Admitted(ceiling=1, clamped=False, amounts=(100,), tightest=None, states=(state,))
    plain = Thresholds()
    assert plain.crossed(admitted) == []  # 90% -> 100%: no soft threshold there
    watched = Thresholds({"*": (10_000,), "team-ml": (9_500,)})
    found = watched.crossed(admitted)
    assert [(c.threshold_bp, c.used_bp) for c in found] == [(9_500, 10_000), (10_000, 10_000)]
    assert {(c.since_ms, c.limit, c.unit, c.scope) for c in found} == {
        (span.since_ms, 1_000, "usd", "team")
    }
    assert watched.crossed(admitted) == []  # once a window


def test_backoff_doubles_up_to_its_cap() -> None:
    delays = [retry_delay(n, 5, 60) for n in range(1, 7)]
    assert delays == [timedelta(seconds=s) for s in (5, 10, 20, 40, 60, 60)]
    assert percent(9550) == "95.5%"
    assert percent(10_000) == "100%"


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"channels": {"x": {"kind": "webhook"}}}, "exactly one of url or url_env"),
        ({"channels": {"x": {"kind": "email"}}}, "needs 'to'"),
        ({"channels": {"x": {"kind": "slack", "url": "ftp://x"}}}, "http:// or https://"),
        ({"budgets": [{"channels": ["nope"]}]}, "channel 'nope' is not declared"),
        ({"contacts": {"ml": []}}, "alerts.contacts"),
        ({"budgets": [{"thresholds": ["0"]}]}, "greater than 0"),
        ({"events": [{"kinds": ["everything"]}]}, "alerts.events"),
    ],
)
def test_bad_alert_configs_name_the_problem(alerts: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"alerts": alerts}, "t.yaml")


def test_a_charge_above_the_reservation_is_an_alert_of_its_budget_and_member() -> None:
    config = _config(events=[{"kinds": ["settled_above"], "channels": ["ops"]}])
    [alert] = alerts_of(SettledAbove("req_9", "team-ml", "ml", 100, 130), AT, config)
    assert (alert.kind, alert.subject, alert.member) == ("settled_above", "team-ml", "ml")
    assert "reserved 100" in alert.text
    assert "charged 130" in alert.text
