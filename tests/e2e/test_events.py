"""Outcome events through real HTTP and the real SDKs: every attempt of every request ends
in exactly one outcome event (served, refused, rejected, auth failed, upstream failed), and
the access log, their first subscriber, writes exactly one line for each. Thresholds,
breakers and overruns are events too."""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest

from harness import GatewayHarness
from spendgate.events import (
    AuthFailed,
    BreakerOpened,
    Event,
    Refused,
    Rejected,
    Served,
    SettledAbove,
    ThresholdCrossed,
    UpstreamFailed,
    UsageAnomaly,
)
from spendgate.logs import JsonFormatter

MODEL = "gpt-4o-mini"


class Collected:
    """Every event the gateway emits, in order (appended on the gateway's loop thread)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def since(self, mark: int) -> list[Event]:
        with self._lock:
            return self.events[mark:]

    def mark(self) -> int:
        with self._lock:
            return len(self.events)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayHarness, Collected]]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = [
            {
                "name": "tiny",
                "scope": "team",
                "match": "tiny",
                "limit_usd": "0.0001",
                "period": "daily",
                "soft_thresholds": ["0.5"],
            }
        ]
        data["budgets"].append(
            {"name": "over", "scope": "team", "match": "roomy", "limit_usd": "5", "period": "daily"}
        )
        data["orgs"]["acme"]["teams"] += ["tiny", "roomy"]
        data["runaway"] = {"breaker_failures": 2, "breaker_cooldown_s": 600}
        data["providers"]["nowhere"] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
        data["models"]["dead-model"] = {"provider": "nowhere", "upstream_model": MODEL}

    harness = GatewayHarness(
        tmp_path_factory.mktemp("events") / "spendgate.db", configure=configure
    ).start()
    collected = Collected()
    harness.gateway.events.subscribe(collected)
    try:
        yield harness, collected
    finally:
        harness.stop()


def _chat(harness: GatewayHarness, secret: str, **extra: Any) -> Any:
    headers = extra.pop("headers", {})
    with harness.sdk_client("openai", secret, max_retries=0) as client:
        return client.chat.completions.create(
            model=extra.pop("model", MODEL),
            messages=[{"role": "user", "content": f"hello {uuid.uuid4().hex}"}],
            max_tokens=extra.pop("max_tokens", 20),
            extra_headers=headers,
            **extra,
        )


def _settle(harness: GatewayHarness) -> None:
    harness.call(harness.gateway.settled())  # every answered request has its row and event


def test_a_served_request_is_one_served_event(setup: tuple[GatewayHarness, Collected]) -> None:
    harness, collected = setup
    secret = harness.create_key(name="served", team="ml")
    mark = collected.mark()
    _chat(harness, secret)
    _settle(harness)
    [event] = collected.since(mark)
    assert isinstance(event, Served)
    [stored] = harness.ledger(harness.last_key_id)
    assert replace(event.row, ts=stored.ts) == stored  # the row written (to the millisecond)


def test_a_bad_key_is_auth_failed(setup: tuple[GatewayHarness, Collected]) -> None:
    harness, collected = setup
    mark = collected.mark()
    with pytest.raises(openai.AuthenticationError):
        _chat(harness, "sk-sg-not-a-key")
    [event] = collected.since(mark)
    assert isinstance(event, AuthFailed)
    assert event.surface == "openai.chat"
    assert event.request_id.startswith("req_")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b'{"model": "gpt-9", "messages": []}', 404, "model_not_found"),
        (b"{not json", 400, None),
        (b'{"model": "claude-haiku-4-5", "messages": []}', 400, "model_wrong_api"),
    ],
)
def test_a_request_refused_before_admission_is_rejected(
    setup: tuple[GatewayHarness, Collected], body: bytes, status: int, code: str | None
) -> None:
    harness, collected = setup
    secret = harness.create_key(name="rejected", team="ml")
    key_id = harness.last_key_id
    mark = collected.mark()
    response = httpx2.post(
        harness.url + "/v1/chat/completions",
        content=body,
        headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
    )
    assert response.status_code == status
    [event] = collected.since(mark)
    assert isinstance(event, Rejected)
    assert (event.status, event.code, event.key_id) == (status, code, key_id)
    assert event.request_id == response.headers["x-spendgate-request-id"]


def test_a_budget_refusal_is_one_refused_event_and_thresholds_cross_once(
    setup: tuple[GatewayHarness, Collected],
) -> None:
    harness, collected = setup
    secret = harness.create_key(name="tiny", team="tiny")
    mark = collected.mark()
    refused = 0
    for _ in range(30):
        try:
            _chat(harness, secret, headers={"x-sim-output-tokens": "20"})
        except openai.RateLimitError:  # 429 insufficient_quota
            refused += 1
            break
    _settle(harness)
    assert refused == 1
    events = collected.since(mark)
    outcomes = [e for e in events if isinstance(e, Served | Refused)]
    assert isinstance(outcomes[-1], Refused)
    assert outcomes[-1].reason == "tiny"
    assert all(isinstance(e, Served) for e in outcomes[:-1])
    crossed = [e for e in events if isinstance(e, ThresholdCrossed)]
    assert [(e.budget, e.member, e.threshold_bp) for e in crossed] == [("tiny", "tiny", 5_000)]
    assert crossed[0].used_bp >= 5_000
    assert not [e for e in events if isinstance(e, Rejected)]  # one event, not two


def test_upstream_failures_and_the_breaker(setup: tuple[GatewayHarness, Collected]) -> None:
    harness, collected = setup
    secret = harness.create_key(name="failing", team="ml")
    mark = collected.mark()
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            _chat(harness, secret, model="gpt-4o", headers={"x-sim-status": "500"})
    events = collected.since(mark)
    failures = [e for e in events if isinstance(e, UpstreamFailed)]
    assert [(e.status, e.model) for e in failures] == [(500, "gpt-4o"), (500, "gpt-4o")]
    assert all(e.row is not None and e.row.status == 500 for e in failures)
    opened = [e for e in events if isinstance(e, BreakerOpened)]
    assert [(e.key_id, e.model, e.failures) for e in opened] == [(harness.last_key_id, "gpt-4o", 2)]


def test_an_unreachable_provider_is_a_failure_without_a_row(
    setup: tuple[GatewayHarness, Collected],
) -> None:
    harness, collected = setup
    secret = harness.create_key(name="unreachable", team="ml")
    mark = collected.mark()
    with pytest.raises(openai.APIStatusError) as caught:
        _chat(harness, secret, model="dead-model")
    assert caught.value.status_code == 502
    [event] = [e for e in collected.since(mark) if not isinstance(e, BreakerOpened)]
    assert isinstance(event, UpstreamFailed)
    assert (event.provider, event.row) == ("nowhere", None)
    assert harness.ledger(harness.last_key_id) == []


def test_a_charge_above_the_reservation_is_an_event_and_in_the_row(
    setup: tuple[GatewayHarness, Collected],
) -> None:
    """A provider that bills a cache write the body did not ask for (reserved at the plain
    input rate): plausible, so charged, above what was reserved."""
    harness, collected = setup
    secret = harness.create_key(name="overrun", team="roomy")
    mark = collected.mark()
    with harness.sdk_client("anthropic", secret, max_retries=0) as client:
        client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=20,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-sim-cache-write-tokens": "5000", "x-sim-output-tokens": "5"},
        )
    _settle(harness)
    [over] = [e for e in collected.since(mark) if isinstance(e, SettledAbove)]
    assert (over.budget, over.member) == ("over", "roomy")
    assert over.charged > over.reserved
    [row] = harness.ledger(harness.last_key_id)
    assert row.settled_above == ("over",)
    assert row.cache_write_tokens == 5000
    assert row.cost_nanos == over.charged


def test_usage_that_cannot_be_right_is_not_believed(
    setup: tuple[GatewayHarness, Collected],
) -> None:
    """An upstream that ignores max_tokens (non-streamed: no stream guard to stop it)
    reports more output than the request allowed: charged an estimate, capped at what was
    reserved, flagged, and told as an anomaly."""
    harness, collected = setup
    secret = harness.create_key(name="impossible", team="roomy")
    mark = collected.mark()
    _chat(
        harness,
        secret,
        max_tokens=5,
        headers={"x-sim-ignore-max": "1", "x-sim-output-tokens": "400"},
    )
    _settle(harness)
    [anomaly] = [e for e in collected.since(mark) if isinstance(e, UsageAnomaly)]
    assert "above the ceiling of 5" in anomaly.problem
    [row] = harness.ledger(harness.last_key_id)
    assert row.usage_estimated
    assert row.usage_problem == anomaly.problem
    assert row.output_tokens == 5  # capped at the reserved ceiling
    assert not [e for e in collected.since(mark) if isinstance(e, SettledAbove)]


def test_the_access_log_writes_one_line_per_outcome(
    setup: tuple[GatewayHarness, Collected], caplog: pytest.LogCaptureFixture
) -> None:
    harness, collected = setup
    secret = harness.create_key(name="logged", team="ml")
    caplog.set_level(logging.INFO, logger="spendgate")
    mark = collected.mark()
    _chat(harness, secret)
    with pytest.raises(openai.AuthenticationError):
        _chat(harness, secret + "x")
    with pytest.raises(openai.NotFoundError):
        _chat(harness, secret, model="gpt-9")
    with (
        harness.sdk_client("anthropic", secret, max_retries=0) as client,
        pytest.raises(anthropic.BadRequestError),
    ):
        client.messages.create(
            model=MODEL, max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    _settle(harness)
    formatter = JsonFormatter()
    lines = [
        orjson.loads(formatter.format(r)) for r in caplog.records if r.name == "spendgate.access"
    ]
    outcomes = [line["outcome"] for line in lines]
    assert outcomes == ["served", "auth_failed", "rejected", "rejected"]
    assert len(collected.since(mark)) == 4
    assert [line["status"] for line in lines] == [200, 401, 404, 400]
    assert lines[3]["surface"] == "anthropic.messages"
