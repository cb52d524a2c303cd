"""Rate-limit headers in each dialect's shape (pure): OpenAI ``x-ratelimit-*`` with Go
durations, Anthropic ``anthropic-ratelimit-*`` with RFC 3339 times; and the 429's
``retry-after``/``retry-after-ms`` (never over 60 s, else ``x-should-retry: false``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from spendgate.clock import to_ms
from spendgate.config.build import build_budget, limits_from_config
from spendgate.config.schema import BudgetConfig, BudgetScope, LimitConfig
from spendgate.dialects import ANTHROPIC, OPENAI
from spendgate.dialects.openai import go_duration
from spendgate.domain.admission import Admitted, CounterState
from spendgate.domain.budgets import Budget, CounterRef
from spendgate.domain.models import Dialect
from spendgate.domain.periods import Calendar, window
from spendgate.errors import CircuitOpen, LoopDetected, RateLimited
from spendgate.pipeline.limit_headers import limit_headers

CALENDAR = Calendar.of("UTC")
NOW = datetime(2026, 3, 4, 12, 0, 0, 500_000, tzinfo=UTC)  # half a second into a bucket
GO_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+(?:\.\d+)?)s|(\d+)ms)$")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0ms"),
        (-3, "0ms"),
        (0.012, "12ms"),
        (0.5, "500ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (6.25, "6.25s"),
        (59.9, "59.9s"),
        (59.999, "59.999s"),
        (60, "1m0s"),
        (66, "1m6s"),
        (90.5, "1m30.5s"),
        (360, "6m0s"),
        (3600, "1h0m0s"),
        (3725.5, "1h2m5.5s"),
        (86400, "24h0m0s"),
    ],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text
    assert GO_DURATION.match(text)


def parse_go(text: str) -> float:
    match = GO_DURATION.match(text)
    assert match, text
    hours, minutes, secs, millis = match.groups()
    return (
        int(hours or 0) * 3600 + int(minutes or 0) * 60 + float(secs or 0) + int(millis or 0) / 1000
    )


@pytest.mark.parametrize("seconds", [0.001, 0.25, 1, 9.75, 59.9, 61.5, 3599.999, 7322.5])
def test_go_duration_round_trips_to_the_millisecond(seconds: float) -> None:
    assert parse_go(go_duration(seconds)) == pytest.approx(seconds, abs=0.0005)


def state(budget: Budget, spent: int, reserved: int, oldest: datetime | None) -> CounterState:
    ref = CounterRef(budget, "key_1", window(budget.period, NOW, CALENDAR))
    return CounterState(
        ref, budget.limit, spent, reserved, None if oldest is None else to_ms(oldest)
    )


def limits(**fields: object) -> dict[str, Budget]:
    spec = LimitConfig.model_validate({"name": "api", "scope": "key", **fields})
    made = limits_from_config(spec)
    return {budget.name.split(":", 1)[1]: budget for budget in made}


def admitted(*pairs: tuple[CounterState, int]) -> Admitted:
    return Admitted(
        ceiling=100,
        clamped=False,
        amounts=tuple(amount for _, amount in pairs),
        tightest=None,
        states=tuple(s for s, _ in pairs),
    )


def test_openai_headers_report_the_tightest_limit_of_each_kind() -> None:
    made = limits(requests="100/minute; 1000/day", tokens="50000/minute", concurrency=3)
    thirty_ago = datetime(2026, 3, 4, 11, 59, 30, tzinfo=UTC)  # a bucket start (6 s buckets)
    decision = admitted(
        (state(made["requests/minute"], 40, 2, thirty_ago), 1),  # 57 left after this one
        (state(made["requests/day"], 900, 0, NOW - timedelta(hours=5)), 1),  # 99 left
        (state(made["tokens/minute"], 20_000, 5_000, thirty_ago), 150),
        (state(made["concurrency"], 0, 2, None), 1),  # not reported
    )
    headers = limit_headers(decision, Dialect.OPENAI, NOW)
    assert set(headers) == {
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    }
    assert headers["x-ratelimit-limit-requests"] == "100"
    assert headers["x-ratelimit-remaining-requests"] == "57"
    # the oldest bucket (11:59:30) leaves one bucket after the minute: 12:00:36
    assert headers["x-ratelimit-reset-requests"] == "35.5s"
    assert headers["x-ratelimit-limit-tokens"] == "50000"
    assert headers["x-ratelimit-remaining-tokens"] == str(50_000 - 25_000 - 150)
    assert headers["x-ratelimit-reset-tokens"] == "35.5s"

    # when the day has less room left, the day is reported
    day = made["requests/day"]
    since = window(day.period, NOW, CALENDAR).since  # the oldest bucket that still counts
    decision = admitted(
        (state(made["requests/minute"], 40, 2, thirty_ago), 1),
        (state(day, 990, 0, since), 1),
    )
    headers = limit_headers(decision, Dialect.OPENAI, NOW)
    assert headers["x-ratelimit-limit-requests"] == "1000"
    assert headers["x-ratelimit-remaining-requests"] == "9"
    leaves = since + timedelta(days=1) + timedelta(hours=2.4)
    assert headers["x-ratelimit-reset-requests"] == go_duration((leaves - NOW).total_seconds())
    assert timedelta(0) < leaves - NOW <= timedelta(hours=2.4)


def test_a_fresh_window_resets_when_this_request_leaves_it() -> None:
    made = limits(requests="10/minute", tokens="1000/hour")
    decision = admitted(
        (state(made["requests/minute"], 0, 0, None), 1),
        (state(made["tokens/hour"], 0, 0, None), 300),
    )
    headers = limit_headers(decision, Dialect.OPENAI, NOW)
    assert headers["x-ratelimit-remaining-requests"] == "9"
    # this request lands in the 12:00:00 bucket, which leaves at 12:01:06
    assert headers["x-ratelimit-reset-requests"] == "1m5.5s"
    assert headers["x-ratelimit-remaining-tokens"] == "700"
    assert headers["x-ratelimit-reset-tokens"] == "1h5m59.5s"  # 6-minute buckets


def test_anthropic_headers_are_rfc3339_utc() -> None:
    made = limits(requests="100/minute", tokens="50000/minute")
    thirty_ago = datetime(2026, 3, 4, 11, 59, 30, tzinfo=UTC)
    decision = admitted(
        (state(made["requests/minute"], 10, 0, thirty_ago), 1),
        (state(made["tokens/minute"], 0, 0, None), 400),
    )
    headers = limit_headers(decision, Dialect.ANTHROPIC, NOW)
    assert headers == {
        "anthropic-ratelimit-requests-limit": "100",
        "anthropic-ratelimit-requests-remaining": "89",
        "anthropic-ratelimit-requests-reset": "2026-03-04T12:00:36Z",
        "anthropic-ratelimit-tokens-limit": "50000",
        "anthropic-ratelimit-tokens-remaining": "49600",
        "anthropic-ratelimit-tokens-reset": "2026-03-04T12:01:06Z",
    }
    for name in ("requests", "tokens"):
        stamp = headers[f"anthropic-ratelimit-{name}-reset"]
        assert datetime.fromisoformat(stamp).tzinfo is not None


def test_shadow_limits_budgets_and_dollars_are_not_reported() -> None:
    (shadow,) = limits_from_config(
        LimitConfig(name="watch", scope=BudgetScope.KEY, requests="5/minute", shadow=True)
    )
    (velocity,) = limits_from_config(
        LimitConfig(name="velocity", scope=BudgetScope.KEY, usd="1/minute")
    )
    budget = build_budget(
        BudgetConfig(name="b", scope=BudgetScope.KEY, limit_tokens=1000, period="daily")
    )
    decision = admitted(
        (state(shadow, 9, 0, NOW), 1),
        (state(velocity, 0, 0, None), 5000),
        (state(budget, 0, 0, None), 300),
    )
    assert limit_headers(decision, Dialect.OPENAI, NOW) == {}
    assert limit_headers(decision, Dialect.ANTHROPIC, NOW) == {}


def test_remaining_never_goes_below_zero() -> None:
    made = limits(requests="10/minute")
    # an operator lowered the limit below what is already used
    budget = made["requests/minute"]
    lowered = CounterState(
        CounterRef(budget, "key_1", window(budget.period, NOW, CALENDAR)),
        limit=5,
        spent=8,
        reserved=0,
        oldest_ms=to_ms(NOW),
    )
    headers = limit_headers(admitted((lowered, 1)), Dialect.OPENAI, NOW)
    assert headers["x-ratelimit-limit-requests"] == "5"
    assert headers["x-ratelimit-remaining-requests"] == "0"


# ------------------------------------------------------------------ retry-after on 429s


@pytest.mark.parametrize(
    ("wait", "after", "after_ms"),
    [
        (0.0001, "1", "1"),
        (0.25, "1", "250"),
        (1.1, "2", "1100"),  # float noise does not add a millisecond
        (1.0996, "2", "1100"),  # rounded up, never before room appears
        (45, "45", "45000"),
        (60, "60", "60000"),
    ],
)
def test_short_waits_carry_retry_after_and_retry_after_ms(
    wait: float, after: str, after_ms: str
) -> None:
    for refusal in (RateLimited("full", wait_s=wait), CircuitOpen("open", wait_s=wait)):
        headers = refusal.headers()
        assert headers["retry-after"] == after
        assert headers["retry-after-ms"] == after_ms
        # an open breaker says what is left of its cool-down, but not to retry: agents'
        # own backoff makes every retry a probe (issue 12, item 3)
        retry = "false" if isinstance(refusal, CircuitOpen) else "true"
        assert headers["x-should-retry"] == retry


@pytest.mark.parametrize("wait", [60.001, 61, 3600, 86400])
def test_long_waits_are_not_retryable(wait: float) -> None:
    for refusal in (RateLimited("full", wait_s=wait), CircuitOpen("open", wait_s=wait)):
        headers = refusal.headers()
        assert headers["x-should-retry"] == "false"
        assert "retry-after" not in headers
        assert "retry-after-ms" not in headers


def test_rate_limit_and_loop_bodies() -> None:
    requests = OPENAI.error_body(RateLimited("full", wait_s=1), None)["error"]
    tokens = OPENAI.error_body(RateLimited("full", wait_s=1, tokens=True), None)["error"]
    assert requests == {
        "message": "full",
        "type": "requests",
        "param": None,
        "code": "rate_limit_exceeded",
    }
    assert isinstance(tokens, dict)
    assert tokens["type"] == "tokens"
    loop = LoopDetected("Loop detected: ...")
    assert loop.status == 429
    assert loop.headers() == {"x-should-retry": "false"}
    assert ANTHROPIC.error_body(loop, None)["error"] == {
        "type": "rate_limit_error",
        "message": "Loop detected: ...",
    }
