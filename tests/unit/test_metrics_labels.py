"""The metrics subscriber on its own, for what test_metrics_events.py does not cover: the
added-latency histogram, opt-in user and key labels (capped), loop detections, the
watchers of the admission line and the alerts, and the scrape-time gauges of budgets per
user (counted, or named when opted in). The circuit breakers' gauge reads
`CircuitBreakers.open_by_model` (tests/unit/test_breaker.py)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from spendgate.config.metrics import MetricsConfig
from spendgate.events import LoopStruck, Refused, Served
from spendgate.events.metrics import OTHER, Capped, Metrics
from storage.storage_samples import build_row


def _samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def _total(metrics: Metrics, name: str, **labels: str) -> float:
    return sum(
        value
        for (n, found), value in _samples(metrics).items()
        if n == name and all(dict(found).get(k) == v for k, v in labels.items())
    )


def test_overhead_is_latency_less_upstream_time_and_never_negative() -> None:
    metrics = Metrics()
    metrics(Served(build_row(latency_ms=250.0), upstream_ms=240.0))
    metrics(Served(build_row(latency_ms=100.0), upstream_ms=100.5))  # clock rounding: 0
    metrics(Served(build_row(latency_ms=100.0)))  # not measured: no observation
    assert _total(metrics, "spendgate_overhead_seconds_count") == 2
    assert abs(_total(metrics, "spendgate_overhead_seconds_sum") - 0.010) < 1e-9
    assert _total(metrics, "spendgate_overhead_seconds_bucket", le="0.01") == 2
    assert _total(metrics, "spendgate_overhead_seconds_bucket", le="0.005") == 1
    assert _total(metrics, "spendgate_request_duration_seconds_count") == 3


def test_no_user_or_key_label_by_default() -> None:
    metrics = Metrics()
    metrics(Served(build_row(user="alice", key_id="key_1")))
    names = {name for _, labels in _samples(metrics) for name, _ in labels}
    assert not names & {"user", "key"}


def test_opted_in_labels_are_capped() -> None:
    metrics = Metrics(MetricsConfig(labels=["user", "key"], max_label_values=2))
    for user, key in (("alice", "k1"), ("bob", "k2"), ("carol", "k3"), ("alice", "k4")):
        metrics(Served(build_row(user=user, key_id=key, cost_nanos=1_000_000_000)))
    metrics(Refused(build_row(user="dave", key_id="k1", blocked_by="ml-daily", status=429)))
    requests = "spendgate_requests_total"
    assert _total(metrics, requests, user="alice") == 2
    assert _total(metrics, requests, user="bob") == 1
    assert _total(metrics, requests, user=OTHER) == 2  # carol, then dave
    assert _total(metrics, requests, key="k1") == 2
    assert _total(metrics, requests, key=OTHER) == 2  # k3, k4
    assert _total(metrics, "spendgate_cost_dollars_total", user="alice") == 2
    assert _total(metrics, "spendgate_refusals_total", user=OTHER, key="k1") == 1


def test_capped_keeps_the_first_values() -> None:
    capped = Capped(1)
    assert [capped(v) for v in ("a", "b", "a", None, "")] == ["a", OTHER, "a", "", ""]


def test_loop_detections_and_watchers() -> None:
    metrics = Metrics()
    metrics(LoopStruck("key_1", "gpt-4o", 1, key_wide=False, team="ml", service="bot"))
    metrics(LoopStruck("key_1", "gpt-4o", 1, key_wide=True, team="ml", service="bot"))
    metrics.admission_waited("ml-daily", 0.3, "admitted")
    metrics.admission_waited("key:key_1", 2.0, "timed_out")  # a key's own budget: unnamed
    metrics.alert_raised("threshold")
    metrics.alert_delivery("slack", "retrying")
    detections = "spendgate_loop_detections_total"
    assert _total(metrics, detections, scope="pair", team="ml", model="gpt-4o") == 1
    assert _total(metrics, detections, scope="key") == 1
    wait = "spendgate_admission_wait_seconds_count"
    assert _total(metrics, wait, budget="ml-daily", outcome="admitted") == 1
    assert _total(metrics, wait, budget="key", outcome="timed_out") == 1
    assert _total(metrics, "spendgate_alerts_raised_total", kind="threshold") == 1
    deliveries = "spendgate_alert_deliveries_total"
    assert _total(metrics, deliveries, channel_kind="slack", outcome="retrying") == 1
    named = {value for _, labels in _samples(metrics) for _, value in labels}
    assert "key_1" not in named


def test_alert_events_dropped_is_one_of_the_summed_counters() -> None:
    """The alert queue's drops are counted by `Metrics` (summed over the workers with the
    other counters), not read from the answering process at scrape time: with several
    workers a scrape read one worker's count, and the counter went back and forth."""
    from datetime import UTC, datetime

    from spendgate.clock import ManualClock
    from spendgate.config import parse_config
    from spendgate.events import ThresholdCrossed
    from spendgate.events.alerts import AlertInbox

    alerts = {
        "channels": {"ops": {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}},
        "budgets": [{"thresholds": ["0.8"], "channels": ["ops"]}],
        "queue_max": 1,
    }
    config = parse_config({"alerts": alerts}, "t.yaml").alerts
    inbox = AlertInbox(config, ManualClock(datetime(2026, 3, 10, tzinfo=UTC)))
    metrics = Metrics()
    inbox.on_drop = metrics.alert_event_dropped
    for _ in range(3):
        inbox(ThresholdCrossed("team-ml", "ml", 8000, 8100, "req_1", 1_000, 10**9, "usd", "team"))
    assert inbox.dropped == 2
    assert _total(metrics, "spendgate_alert_events_dropped_total") == 2
