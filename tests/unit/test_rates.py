"""The rate-limit grammar (``"600/minute; 20000/day"``), the limits a config entry turns
into, and the config errors a bad limit string gives: each names the file and the key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from spendgate.cli.main import cli
from spendgate.clock import to_ms
from spendgate.config import parse_config
from spendgate.config.build import limits_from_config
from spendgate.config.schema import BudgetScope, LimitConfig
from spendgate.domain.admission import CounterState
from spendgate.domain.budgets import (
    Caller,
    CounterRef,
    Kind,
    Unit,
    loop_detector,
)
from spendgate.domain.identity import ApiKey
from spendgate.domain.periods import Calendar, window
from spendgate.domain.rates import Rate, parse_rates
from spendgate.errors import ConfigError

SECOND = timedelta(seconds=1)
MINUTE = timedelta(minutes=1)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
UTC_CALENDAR = Calendar.of("UTC")

# ------------------------------------------------------------------------------ grammar


@pytest.mark.parametrize(
    ("text", "amount", "period"),
    [
        ("600/minute", 600, MINUTE),
        ("600/minutes", 600, MINUTE),
        ("600/min", 600, MINUTE),
        ("600/mins", 600, MINUTE),
        ("600/m", 600, MINUTE),
        ("2/second", 2, SECOND),
        ("2/seconds", 2, SECOND),
        ("2/sec", 2, SECOND),
        ("2/secs", 2, SECOND),
        ("2/s", 2, SECOND),
        ("50/hour", 50, HOUR),
        ("50/hours", 50, HOUR),
        ("50/h", 50, HOUR),
        ("100/day", 100, DAY),
        ("100/days", 100, DAY),
        ("100/d", 100, DAY),
        ("100/5m", 100, 5 * MINUTE),
        ("100/5minutes", 100, 5 * MINUTE),
        ("10/30s", 10, 30 * SECOND),
        ("1000/12h", 1000, 12 * HOUR),
        ("7/2d", 7, 2 * DAY),
        ("  10 / 5 m  ", 10, 5 * MINUTE),
        ("10/Minute", 10, MINUTE),
        ("10/MINUTES", 10, MINUTE),
        ("1_000/minute", 1000, MINUTE),
        ("1,000,000/day", 1_000_000, DAY),
    ],
)
def test_one_rate_in_every_form(text: str, amount: int, period: timedelta) -> None:
    (rate,) = parse_rates(text, whole=True)
    assert rate == Rate(Decimal(amount), period, text.strip())
    assert str(rate) == text.strip()


def test_several_rates_in_their_order() -> None:
    rates = parse_rates("600/minute; 20000/day", whole=True)
    assert [(r.amount, r.period, r.text) for r in rates] == [
        (Decimal(600), MINUTE, "600/minute"),
        (Decimal(20000), DAY, "20000/day"),
    ]
    # blank parts (a trailing ";") are ignored
    assert parse_rates("5/s;;10/m;", whole=True) == (
        Rate(Decimal(5), SECOND, "5/s"),
        Rate(Decimal(10), MINUTE, "10/m"),
    )


@pytest.mark.parametrize(
    ("text", "amount", "period"),
    [
        ("2.50/hour", "2.50", HOUR),
        ("0.001/minute", "0.001", MINUTE),
        ("5/minute", "5", MINUTE),
        ("1,000.5/day", "1000.5", DAY),
    ],
)
def test_dollar_rates_take_decimals(text: str, amount: str, period: timedelta) -> None:
    (rate,) = parse_rates(text, whole=False)
    assert rate.amount == Decimal(amount)
    assert rate.period == period


@pytest.mark.parametrize(
    ("text", "whole", "problem"),
    [
        ("10/fortnight", True, "'10/fortnight': unknown period 'fortnight'"),
        ("10/fortnights", True, "'10/fortnights': unknown period 'fortnight'"),
        ("10/week", True, "'10/week': unknown period 'week' (second, minute, hour or day)"),
        # "ms" is not the plural of "m": no silent per-minute limit for a millisecond typo
        ("10/ms", True, "'10/ms': unknown period 'ms'"),
        ("10/hs", True, "'10/hs': unknown period 'hs'"),
        ("2.5/minute", True, "'2.5/minute': requests and tokens are counted in whole numbers"),
        ("0/minute", True, "'0/minute': the amount must be positive"),
        ("0.00/hour", False, "'0.00/hour': the amount must be positive"),
        ("-1/minute", True, "'-1/minute' is not a rate: write <amount>/<period>"),
        ("ten/minute", True, "'ten/minute' is not a rate"),
        ("10", True, "'10' is not a rate"),
        ("10/", True, "'10/' is not a rate"),
        ("/minute", True, "'/minute' is not a rate"),
        ("1e3/minute", True, "'1e3/minute' is not a rate"),
        ("10/0m", True, "'10/0m': the period count must be positive"),
        # no window of them fits in `datetime` (was: every request of the key a 500), or
        # the period itself overflowed `timedelta` (was: a 500 on creating the key)
        ("10/3651day", True, "'10/3651day': the period is at most 3650 days (10 years)"),
        ("10/99999999day", True, "'10/99999999day': the period is at most 3650 days"),
        ("10/9999999999999h", True, "'10/9999999999999h': the period is at most 3650 days"),
        ("10/minute 20/hour", True, "is not a rate"),
        ("10/minute; 20/minute", True, "'10/minute; 20/minute' gives the same period twice"),
        ("10/minute; 600/60s", True, "gives the same period twice"),
        ("1/day; 5/24h", True, "gives the same period twice"),
        ("", True, "no rate in ''"),
        (" ; ", True, "no rate in ' ; '"),
    ],
)
def test_bad_rates_say_what_is_wrong(text: str, whole: bool, problem: str) -> None:
    with pytest.raises(ValueError, match=re.escape(problem)):
        parse_rates(text, whole=whole)


# ------------------------------------------------------------------ limits from config


def test_a_limit_entry_becomes_one_counter_per_rate() -> None:
    spec = LimitConfig(
        name="api",
        scope=BudgetScope.TEAM,
        match="ml",
        models=["gpt-*"],
        requests="600/minute; 20000/day",
        tokens="200000/minute",
        usd="2.50/hour",
        concurrency=8,
    )
    made = limits_from_config(spec)
    assert [(b.name, b.unit, b.limit) for b in made] == [
        ("api:requests/minute", Unit.REQUESTS, 600),
        ("api:requests/day", Unit.REQUESTS, 20000),
        ("api:tokens/minute", Unit.TOKENS, 200_000),
        ("api:usd/hour", Unit.NANOS, 2_500_000_000),
        ("api:concurrency", Unit.CONCURRENT, 8),
    ]
    for budget in made:
        assert budget.kind is Kind.LIMIT
        assert budget.hard
        assert budget.blocks
        assert not budget.clamps
        assert not budget.shadow
        assert budget.soft_bp == ()
        assert budget.target.scope is BudgetScope.TEAM
        assert budget.target.match == "ml"
        assert budget.target.models == ("gpt-*",)
    periods = [(b.period.kind, b.period.length, b.period.bucket) for b in made]
    assert periods == [
        ("rolling", MINUTE, 6 * SECOND),  # a window is kept in tenths...
        ("rolling", DAY, timedelta(hours=2.4)),
        ("rolling", MINUTE, 6 * SECOND),
        ("rolling", HOUR, 6 * MINUTE),
        ("lifetime", None, None),  # concurrency: no window, released when a request ends
    ]


def test_short_windows_keep_buckets_of_at_least_100_ms() -> None:
    made = limits_from_config(
        LimitConfig(name="s", scope=BudgetScope.KEY, requests="2/second; 10/5s")
    )
    assert [b.period.bucket for b in made] == [
        timedelta(milliseconds=100),  # a tenth of a second
        timedelta(milliseconds=500),
    ]
    loop = loop_detector(3, 0.5)
    assert loop is not None
    assert loop.period.bucket == timedelta(milliseconds=100)  # not 50 ms


def test_shadow_limits_count_but_never_block() -> None:
    (budget,) = limits_from_config(
        LimitConfig(name="watch", scope=BudgetScope.KEY, requests="5/minute", shadow=True)
    )
    assert budget.shadow
    assert not budget.blocks


def test_loop_detector() -> None:
    assert loop_detector(0, 60) is None  # off
    loop = loop_detector(2, 30)
    assert loop is not None
    assert loop.kind is Kind.LOOP
    assert loop.unit is Unit.REQUESTS
    assert loop.limit == 2  # two sends pass, the third is refused
    assert loop.period.length == timedelta(seconds=30)
    assert loop.period.bucket == timedelta(seconds=3)


def _key(**fields: Any) -> ApiKey:
    base: dict[str, Any] = {
        "id": "key_1",
        "key_hash": "h",
        "hint": "sg-...",
        "name": "k",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    base.update(fields)
    return ApiKey(**base)


def test_session_and_model_scopes_pick_their_member() -> None:
    session = limits_from_config(
        LimitConfig(name="per-session", scope=BudgetScope.SESSION, requests="3/minute")
    )[0]
    model = limits_from_config(
        LimitConfig(name="per-model", scope=BudgetScope.MODEL, match="gpt-4o", requests="9/s")
    )[0]
    caller = Caller(key=_key(), org=None, model="gpt-4o", session="sess-1")
    assert session.target.members(caller) == ["sess-1"]
    assert model.target.members(caller) == ["gpt-4o"]
    no_session = Caller(key=_key(), org=None, model="gpt-4o-mini")
    assert session.target.members(no_session) == []  # nothing to count: not limited
    assert model.target.members(no_session) == []  # another model


# ---------------------------------------------------------------- rolling windows edges


def test_a_rolling_window_frees_room_when_its_oldest_bucket_leaves() -> None:
    """Error bound: one bucket, on the side of refusing. 10/minute has 6 s buckets; what
    went in at 12:00:01 (bucket 12:00:00) counts until 12:01:06, never less than 60 s."""
    (budget,) = limits_from_config(
        LimitConfig(name="edge", scope=BudgetScope.KEY, requests="10/minute")
    )
    filled = datetime(2026, 1, 1, 12, 0, 1, tzinfo=UTC)
    bucket = window(budget.period, filled, UTC_CALENDAR).bucket
    assert bucket == datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)

    def state(now: datetime) -> CounterState:
        span = window(budget.period, now, UTC_CALENDAR)
        counts = span.since <= bucket  # the bucket's row is still summed
        return CounterState(
            CounterRef(budget, "key_1", span),
            limit=10,
            spent=10 if counts else 0,
            reserved=0,
            oldest_ms=to_ms(bucket) if counts else None,
        )

    frees = state(filled + timedelta(seconds=20)).frees_at(filled + timedelta(seconds=20))
    assert frees == datetime(2026, 1, 1, 12, 1, 6, tzinfo=UTC)
    assert timedelta(0) <= frees - (filled + MINUTE) <= timedelta(seconds=6)
    assert state(frees - timedelta(milliseconds=1)).room == 0
    assert state(frees).room == 10
    # a fresh window: what this request adds leaves with the current bucket
    empty = state(frees)
    assert empty.frees_at(frees) == frees  # nothing to wait for
    assert empty.frees_at(frees, adding=True) == frees + timedelta(seconds=66)


# ------------------------------------------------------------------- config error paths

BASE: dict[str, Any] = {
    "providers": {"openai": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
    "models": {"gpt-4o-mini": {"provider": "openai"}},
}


def _limit(**fields: Any) -> dict[str, Any]:
    return {"name": "api", "scope": "key", **fields}


CONFIG_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown period",
        {"limits": [_limit(requests="10/fortnight")]},
        "sg.yaml: limits[0].requests: '10/fortnight': unknown period 'fortnight' "
        "(second, minute, hour or day)",
    ),
    (
        "non-integer requests",
        {"limits": [_limit(requests="2.5/minute")]},
        "sg.yaml: limits[0].requests: '2.5/minute': requests and tokens are counted in "
        "whole numbers",
    ),
    (
        "non-integer tokens in the second rate",
        {"limits": [_limit(requests="1/s"), _limit(name="t", tokens="100/minute; 1.5/day")]},
        "sg.yaml: limits[1].tokens: '1.5/day': requests and tokens are counted in whole numbers",
    ),
    (
        "negative",
        {"limits": [_limit(requests="-5/minute")]},
        "sg.yaml: limits[0].requests: '-5/minute' is not a rate: write <amount>/<period>, "
        "e.g. '600/minute'",
    ),
    (
        "zero dollars",
        {"limits": [_limit(usd="0/hour")]},
        "sg.yaml: limits[0].usd: '0/hour': the amount must be positive",
    ),
    (
        "not a number",
        {"limits": [_limit(usd="lots/hour")]},
        "sg.yaml: limits[0].usd: 'lots/hour' is not a rate: write <amount>/<period>, "
        "e.g. '600/minute'",
    ),
    (
        "duplicate period",
        {"limits": [_limit(requests="10/minute; 20/60s")]},
        "sg.yaml: limits[0].requests: '10/minute; 20/60s' gives the same period twice",
    ),
    (
        "empty rate string",
        {"limits": [_limit(tokens=" ")]},
        "sg.yaml: limits[0].tokens: no rate in ' ': write e.g. '600/minute; 20000/day'",
    ),
    (
        "no rate at all",
        {"limits": [_limit()]},
        "sg.yaml: limits[0]: give at least one of requests, tokens, usd or concurrency",
    ),
    (
        "rate as a number",
        {"limits": [_limit(requests=600)]},
        "sg.yaml: limits[0].requests: Input should be a valid string",
    ),
    (
        "zero concurrency",
        {"limits": [_limit(concurrency=0)]},
        "sg.yaml: limits[0].concurrency: Input should be greater than 0",
    ),
    (
        "unknown scope",
        {"limits": [_limit(scope="planet", requests="1/s")]},
        "sg.yaml: limits[0].scope: Input should be ",
    ),
    (
        "name shared with a budget",
        {
            "budgets": [{"name": "api", "scope": "key", "limit_usd": "1"}],
            "limits": [_limit(requests="10/minute")],
        },
        "sg.yaml: limits[0].name: duplicate name 'api', already used by budgets[0].name "
        "(budget and limit names share one namespace)",
    ),
    (
        "two limits, one name",
        {"limits": [_limit(requests="1/s"), _limit(tokens="5/s")]},
        "sg.yaml: limits[1].name: duplicate name 'api', already used by limits[0].name "
        "(budget and limit names share one namespace)",
    ),
    (
        # the budget would share the limit's counter rows: its members, spend and overrides
        "a budget named as a limit's counter",
        {
            "budgets": [{"name": "api:requests/minute", "scope": "user", "limit_usd": "1"}],
            "limits": [_limit(requests="10/minute")],
        },
        "sg.yaml: budgets[0].name: 'api:requests/minute' is the name of a counter of "
        "limits[0] (a limit's rates are named <name>:<unit>/<period>, <name>:concurrency): "
        "choose another name",
    ),
    (
        "a budget named as a limit's concurrency counter",
        {
            "budgets": [{"name": "api:concurrency", "scope": "key", "limit_usd": "1"}],
            "limits": [_limit(concurrency=2)],
        },
        "sg.yaml: budgets[0].name: 'api:concurrency' is the name of a counter of limits[0] "
        "(a limit's rates are named <name>:<unit>/<period>, <name>:concurrency): "
        "choose another name",
    ),
    (
        "a budget named as a key's own",
        {"budgets": [{"name": "key:key_0123456789abcdef", "scope": "key", "limit_usd": "1"}]},
        "sg.yaml: budgets[0].name: 'key:key_0123456789abcdef' starts with 'key:', which names "
        "a key's own budget and limits (key:<id>): choose another name",
    ),
    (
        "a limit named as a key's own",
        {"limits": [_limit(name="key:key_0123456789abcdef", requests="1/s")]},
        "sg.yaml: limits[0].name: 'key:key_0123456789abcdef' starts with 'key:', which names "
        "a key's own budget and limits (key:<id>): choose another name",
    ),
    (
        "negative loop repeats",
        {"runaway": {"loop_max_repeats": -1}},
        "sg.yaml: runaway.loop_max_repeats: Input should be greater than or equal to 0",
    ),
    (
        "zero cooldown",
        {"runaway": {"breaker_cooldown_s": 0}},
        "sg.yaml: runaway.breaker_cooldown_s: Input should be greater than 0",
    ),
]


@pytest.mark.parametrize(
    ("data", "message"), [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES]
)
def test_bad_limit_config_names_the_key(tmp_path: Path, data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({**BASE, **data}, "sg.yaml")
    text = str(caught.value)
    assert text.startswith(message), text
    if message.endswith(")") or message.endswith("'"):
        assert text == message
    key = message.removeprefix("sg.yaml: ").split(": ", 1)[0]
    assert caught.value.key == key

    # the same through `spendgate check-config`: exit status 1, the message on stderr
    path = tmp_path / "sg.yaml"
    path.write_text(yaml.safe_dump({**BASE, **data}), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["check-config", "-c", str(path)], env={"SPENDGATE_CONFIG": None}
    )
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert f"{path}: {message.removeprefix('sg.yaml: ')}" in result.stderr


def test_good_limit_config_passes_check_config(tmp_path: Path) -> None:
    data = {
        **BASE,
        "limits": [
            _limit(requests="600/minute; 20000/day", tokens="200000/minute", concurrency=4),
            {"name": "velocity", "scope": "team", "match": "ml", "usd": "2.50/hour"},
            {"name": "sess", "scope": "session", "requests": "100/5m", "shadow": True},
        ],
        "runaway": {"loop_max_repeats": 3, "breaker_failures": 5, "breaker_cooldown_s": 10},
    }
    config = parse_config(data, "sg.yaml")
    assert [limit.name for limit in config.limits] == ["api", "velocity", "sess"]
    path = tmp_path / "sg.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["check-config", "-c", str(path)], env={"SPENDGATE_CONFIG": None}
    )
    assert result.exit_code == 0, result.output
    assert ": OK:" in result.stdout
