"""Structured logs: one JSON line per request, never a prompt, a completion or a secret.

Every outcome a client can get (served, refused by a budget, a rate limit or an open
breaker, a bad key on any route, an unpriced model, an unreachable provider) is exactly one
`request` line at `info`, naming its status, reason, identity and cost; a soft threshold
crossed and a breaker opening and closing are a line each, once."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx2
import openai
import orjson
import pytest

from harness import SIM_SECRET_OPENAI, GatewayHarness
from spendgate.clock import ManualClock
from spendgate.logs import JsonFormatter

PROMPT = "the-launch-codes-are-0000-do-not-log-this"
MODEL = "gpt-4o-mini"


def test_access_log_is_json_and_holds_no_prompt_or_secret(
    gw: GatewayHarness, caplog: pytest.LogCaptureFixture
) -> None:
    secret = gw.create_key(name="logs", team="ml", user="lena")
    key_id = gw.last_key_id
    caplog.set_level(logging.INFO, logger="spendgate")
    with openai.OpenAI(base_url=gw.openai_base_url, api_key=secret, max_retries=0) as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": PROMPT}]
        )
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(
                base_url=gw.openai_base_url, api_key=secret + "x", max_retries=0
            ).models.list()
    gw.call(gw.gateway.settled())
    completion = reply.choices[0].message.content or ""
    formatter = JsonFormatter()
    lines = [formatter.format(record) for record in caplog.records]
    access = [orjson.loads(line) for line in lines if '"request"' in line]
    assert [entry["outcome"] for entry in access] == ["served", "auth_failed"]
    entry = access[0]
    assert entry["key_id"] == key_id
    assert (entry["team"], entry["user"]) == ("ml", "lena")
    assert entry["model"] == "gpt-4o-mini"
    assert entry["status"] == 200
    assert entry["cost_nanos"] == gw.ledger(key_id)[0].cost_nanos
    assert access[1]["status"] == 401
    joined = "\n".join(lines)
    for forbidden in (PROMPT, secret, SIM_SECRET_OPENAI, completion[:30]):
        assert forbidden not in joined


# ------------------------------------------------------------- one line for every outcome

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[GatewayHarness, ManualClock]]:
    def configure(data: dict[str, Any]) -> None:
        data["orgs"]["acme"]["teams"] += ["tiny", "rl"]
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
        data["limits"] = [
            {"name": "one-an-hour", "scope": "team", "match": "rl", "requests": "1/hour"}
        ]
        data["runaway"] = {"breaker_failures": 2, "breaker_cooldown_s": 30}
        data["providers"]["nowhere"] = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
        data["models"]["dead-model"] = {"provider": "nowhere", "upstream_model": MODEL}
        data["models"]["unpriced-model"] = {
            "provider": "openai",
            "upstream_model": "gpt-unpriced-preview",
        }

    clock = ManualClock(T0)
    harness = GatewayHarness(
        tmp_path_factory.mktemp("logging") / "spendgate.db", configure=configure, clock=clock
    ).start()
    try:
        yield harness, clock
    finally:
        harness.stop()


class Log:
    """The access lines and notices written while a test runs."""

    def __init__(self, harness: GatewayHarness, caplog: pytest.LogCaptureFixture) -> None:
        self.harness = harness
        self.caplog = caplog
        self.formatter = JsonFormatter()

    def lines(self, logger: str = "spendgate.access") -> list[dict[str, Any]]:
        self.harness.call(self.harness.gateway.settled())
        return [
            orjson.loads(self.formatter.format(record))
            for record in self.caplog.records
            if record.name == logger
        ]

    def only_line_of(self, request_id: str) -> dict[str, Any]:
        mine = [line for line in self.lines() if line.get("request_id") == request_id]
        assert len(mine) == 1, [(m["outcome"], m["status"], m.get("reason")) for m in mine]
        return mine[0]


@pytest.fixture
def log(outcomes: tuple[GatewayHarness, ManualClock], caplog: pytest.LogCaptureFixture) -> Log:
    caplog.set_level(logging.INFO, logger="spendgate")
    return Log(outcomes[0], caplog)


def _post(
    harness: GatewayHarness,
    secret: str | None,
    model: str = MODEL,
    path: str = "/v1/chat/completions",
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    sent = {"content-type": "application/json", **(headers or {})}
    if secret is not None:
        sent["authorization"] = f"Bearer {secret}"
    body = {
        "model": model,
        "max_tokens": 20,
        "messages": [{"role": "user", "content": f"{PROMPT} {uuid.uuid4().hex}"}],
    }
    return httpx2.post(harness.url + path, content=orjson.dumps(body), headers=sent, timeout=30)


def _id(response: httpx2.Response) -> str:
    return response.headers["x-spendgate-request-id"]


def test_served_and_refused_by_a_budget_one_line_each_and_the_threshold_once(
    outcomes: tuple[GatewayHarness, ManualClock], log: Log
) -> None:
    harness, _ = outcomes
    secret = harness.create_key(name="tiny", team="tiny", user="ida")
    key_id = harness.last_key_id
    answers = []
    for _ in range(40):
        answers.append(_post(harness, secret, headers={"x-sim-output-tokens": "20"}))
        if answers[-1].status_code != 200:
            break
    *served, refused = answers
    assert served
    assert refused.status_code == 429
    rows = {row.request_id: row for row in harness.ledger(key_id)}
    for answer in served:
        line = log.only_line_of(_id(answer))
        assert (line["outcome"], line["status"], line["key_id"]) == ("served", 200, key_id)
        assert (line["team"], line["user"]) == ("tiny", "ida")
        assert line["cost_nanos"] == rows[_id(answer)].cost_nanos > 0
    line = log.only_line_of(_id(refused))
    assert (line["outcome"], line["status"], line["reason"]) == ("refused", 429, "tiny")
    assert (line["key_id"], line["team"], line["user"]) == (key_id, "tiny", "ida")
    assert line["cost_nanos"] == 0
    assert line["would_cost_nanos"] > 0
    assert len(log.lines()) == len(answers)
    [notice] = [n for n in log.lines("spendgate.budgets") if n["msg"] == "soft threshold crossed"]
    assert (notice["budget"], notice["member"], notice["threshold_bp"]) == ("tiny", "tiny", 5000)
    assert notice["level"] == "warning"


def test_a_rate_limit_refusal_is_one_line(
    outcomes: tuple[GatewayHarness, ManualClock], log: Log
) -> None:
    harness, _ = outcomes
    secret = harness.create_key(name="rl", team="rl", service="indexer")
    key_id = harness.last_key_id
    first, second = _post(harness, secret), _post(harness, secret)
    assert (first.status_code, second.status_code) == (200, 429)
    line = log.only_line_of(_id(second))
    assert (line["outcome"], line["status"]) == ("refused", 429)
    assert line["reason"] == "one-an-hour:requests/hour"
    assert (line["key_id"], line["team"], line["service"]) == (key_id, "rl", "indexer")
    assert line["cost_nanos"] == 0
    assert len(log.lines()) == 2


@pytest.mark.parametrize(
    ("secret", "path", "method"),
    [
        (None, "/v1/chat/completions", "POST"),
        ("sk-sg-not-a-key", "/v1/chat/completions", "POST"),
        ("sk-sg-not-a-key", "/v1/messages", "POST"),
        ("sk-sg-not-a-key", "/v1/models", "GET"),
    ],
)
def test_a_bad_key_is_one_line_on_every_route(
    outcomes: tuple[GatewayHarness, ManualClock],
    log: Log,
    secret: str | None,
    path: str,
    method: str,
) -> None:
    harness, _ = outcomes
    if method == "GET":
        answer = httpx2.get(
            harness.url + path, headers={"authorization": f"Bearer {secret}"}, timeout=30
        )
    else:
        answer = _post(harness, secret, path=path)
    assert answer.status_code == 401
    line = log.only_line_of(_id(answer))
    assert (line["outcome"], line["status"], line["reason"]) == (
        "auth_failed",
        401,
        "invalid_api_key",
    )
    assert line["key_id"] is None
    assert line["cost_nanos"] == 0
    assert len(log.lines()) == 1


def test_an_unpriced_model_is_one_line(
    outcomes: tuple[GatewayHarness, ManualClock], log: Log
) -> None:
    harness, _ = outcomes
    secret = harness.create_key(name="unpriced", team="ml", user="uma")
    answer = _post(harness, secret, model="unpriced-model")
    assert answer.status_code == 403
    line = log.only_line_of(_id(answer))
    assert (line["outcome"], line["status"], line["reason"]) == (
        "rejected",
        403,
        "model_not_priced",
    )
    assert (line["key_id"], line["team"], line["user"]) == (harness.last_key_id, "ml", "uma")
    assert (line["model"], line["cost_nanos"]) == ("unpriced-model", 0)
    assert len(log.lines()) == 1


def test_an_unreachable_provider_is_one_line(
    outcomes: tuple[GatewayHarness, ManualClock], log: Log
) -> None:
    harness, _ = outcomes
    secret = harness.create_key(name="dead", team="web", user="dev")
    answer = _post(harness, secret, model="dead-model")
    assert answer.status_code == 502
    line = log.only_line_of(_id(answer))
    assert (line["outcome"], line["status"], line["reason"]) == (
        "upstream_failed",
        502,
        "upstream_unavailable",
    )
    assert (line["key_id"], line["team"], line["user"]) == (harness.last_key_id, "web", "dev")
    assert (line["provider"], line["model"], line["cost_nanos"]) == ("nowhere", "dead-model", 0)
    assert line["level"] == "warning"
    assert len(log.lines()) == 1
    # The operator's log names the address that failed; the client is told why, not where.
    assert "127.0.0.1" in line["error"]
    message = answer.json()["error"]["message"]
    assert message == (
        "The upstream provider 'nowhere' could not be reached: the connection was refused."
    )


def test_a_breaker_opens_and_closes_once_each_and_its_refusals_are_a_line(
    outcomes: tuple[GatewayHarness, ManualClock], log: Log
) -> None:
    harness, clock = outcomes
    secret = harness.create_key(name="flaky", team="web")
    key_id = harness.last_key_id
    failing = {"x-sim-status": "500"}
    failed = [_post(harness, secret, model="gpt-4o", headers=failing) for _ in range(2)]
    assert [a.status_code for a in failed] == [500, 500]
    open_refusal = _post(harness, secret, model="gpt-4o")
    assert open_refusal.status_code == 503
    for answer in failed:
        line = log.only_line_of(_id(answer))
        assert (line["outcome"], line["status"], line["key_id"]) == ("upstream_failed", 500, key_id)
    line = log.only_line_of(_id(open_refusal))
    assert (line["outcome"], line["status"], line["reason"]) == ("refused", 503, "circuit-breaker")
    clock.advance(31)
    probe = _post(harness, secret, model="gpt-4o")
    assert probe.status_code == 200
    assert log.only_line_of(_id(probe))["outcome"] == "served"
    again = _post(harness, secret, model="gpt-4o")
    assert again.status_code == 200
    assert len(log.lines()) == 5
    notices = [
        (n["msg"], n["level"], n["key_id"], n["model"]) for n in log.lines("spendgate.budgets")
    ]
    assert notices == [
        ("circuit breaker opened", "warning", key_id, "gpt-4o"),
        ("circuit breaker closed", "info", key_id, "gpt-4o"),
    ]


def test_a_request_turned_away_while_draining_is_one_line(
    outcomes: tuple[GatewayHarness, ManualClock], log: Log
) -> None:
    harness, _ = outcomes
    secret = harness.create_key(name="late", team="web")
    harness.gateway.draining = True  # what SIGTERM sets (spendgate.server)
    try:
        answer = _post(harness, secret)
    finally:
        harness.gateway.draining = False
    assert answer.status_code == 503
    line = log.only_line_of(_id(answer))
    assert (line["outcome"], line["status"], line["reason"]) == (
        "rejected",
        503,
        "service_unavailable",
    )
    assert line["cost_nanos"] == 0
    assert len(log.lines()) == 1
