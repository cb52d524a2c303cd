"""The metrics subscriber on its own: what each event adds, and labels that never name a
key, a user or a session, even when what refused was a key's own budget or a per-user cap."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from spendgate.events import BreakerOpened, Refused, Rejected, Served
from spendgate.events.metrics import Metrics, bounded_reason
from storage.storage_samples import build_row


def _values(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def test_bounded_reason_cuts_before_whom() -> None:
    assert bounded_reason("ml-daily") == "ml-daily"
    assert bounded_reason("key:key_1a2b") == "key"
    assert bounded_reason("key:key_1a2b:requests/minute") == "key"
    assert bounded_reason("request-cap:user:alice") == "request-cap:user"
    assert bounded_reason("request-cap:team:ml") == "request-cap:team:ml"
    assert bounded_reason("hidden-input:key:key_1a2b") == "hidden-input:key"
    assert bounded_reason("circuit-breaker") == "circuit-breaker"


def test_refusals_downgrades_fallbacks_and_breakers_are_counted_without_names() -> None:
    metrics = Metrics()
    who = {"key_id": "key_secret1", "user": "alice", "session_id": "sess-1"}
    metrics(Refused(build_row(blocked_by="key:key_secret1", status=429, cost_nanos=0, **who)))
    metrics(Refused(build_row(blocked_by="request-cap:user:alice", status=429, **who)))
    metrics(
        Served(
            build_row(
                route_kind="downgrade",
                route_rule="cheaper",
                requested_model="gpt-4o",
                routed_model="gpt-4o-mini",
                attempt=1,
                fallback_from="gpt-4o",
                **who,
            )
        )
    )
    metrics(BreakerOpened("key_secret1", "gpt-4o", failures=3, cooldown_s=30))
    metrics(Rejected("req_1", "openai.chat", "key_secret1", 404, "model_not_found", "no"))
    values = _values(metrics)
    refusals = {
        dict(labels)["reason"]: value
        for (name, labels), value in values.items()
        if name == "spendgate_refusals_total"
    }
    assert refusals == {"key": 1, "request-cap:user": 1}
    [downgrades] = [v for (n, _), v in values.items() if n == "spendgate_downgrades_total"]
    assert downgrades == 1
    [fallback] = [labels for (n, labels), _ in values.items() if n == "spendgate_fallbacks_total"]
    assert dict(fallback)["from_model"] == "gpt-4o"
    opens = values[("spendgate_breaker_opens_total", (("model", "gpt-4o"),))]
    assert opens == 1
    labels = (("reason", "model_not_found"), ("service", ""), ("surface", "openai.chat"))
    assert values[("spendgate_rejections_total", (*labels, ("team", "")))] == 1
    named = {value for _, labels in values for _, value in labels}
    assert not named & {"key_secret1", "alice", "sess-1"}
