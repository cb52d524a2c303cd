"""Alerts end to end: a real gateway (GatewayHarness), the simulator upstream, a real HTTP
receiver on loopback (`alertkit.Receiver`), a real SMTP server (aiosmtpd).

* hundreds of concurrent requests cross every threshold of a budget: one webhook post per
  threshold, no more;
* a receiver that fails N times then accepts: delivered once, N + 1 attempts in the log;
* a receiver that hangs does not hold up a single answer (the request path only queues);
* e-mail through SMTP, Slack's shape, a member's own contact, refusals once per quiet
  interval, the log in GET /admin/alerts and `spendgate alerts`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiosmtpd.controller import Controller
from click.testing import CliRunner

from alertkit import Receiver, fast_delivery, wait_until
from e2e.process import free_port
from harness import GatewayHarness
from spendgate.cli.main import cli

MODEL = "gpt-4o-mini"
PROMPT = [{"role": "user", "content": "Say something short."}]
SIM = {"x-sim-output-tokens": "20"}
THRESHOLDS = ["0.5", "0.8", "0.95", "1"]


def _budget(limit_usd: str = "0.002", hard: bool = False) -> dict[str, Any]:
    return {
        "name": "team-ml",
        "scope": "team",
        "match": "ml",
        "limit_usd": limit_usd,
        "period": "monthly",
        "hard": hard,
    }


@contextmanager
def gateway(
    tmp_path: Path, alerts: dict[str, Any], budgets: list[dict[str, Any]] | None = None
) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = budgets if budgets is not None else [_budget()]
        data["alerts"] = fast_delivery(alerts)

    harness = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


async def _fire(base_url: str, secret: str, count: int) -> list[BaseException | None]:
    client = openai.AsyncOpenAI(api_key=secret, base_url=base_url, max_retries=0, timeout=60)
    async with client:

        async def one() -> None:
            await client.chat.completions.create(
                model=MODEL, messages=PROMPT, max_tokens=50, extra_headers=SIM
            )

        return await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)


def _log(gw: GatewayHarness) -> list[Any]:
    store = gw.gateway.storage.alert_store
    assert store is not None
    return gw.call(store.log(1000))


def test_hundreds_of_concurrent_requests_raise_each_threshold_once(tmp_path: Path) -> None:
    with Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url + "/ops"}},
            "budgets": [{"budget": "team-ml", "thresholds": THRESHOLDS, "channels": ["ops"]}],
        }
        with gateway(tmp_path, alerts) as gw:
            secret = gw.create_key(team="ml")
            results = asyncio.run(_fire(gw.openai_base_url, secret, 300))
            assert [r for r in results if r is not None] == []
            assert wait_until(lambda: len(receiver.bodies()) >= 4)
            # each attempt is recorded once the receiver has answered it
            assert wait_until(lambda: {e.status for e in _log(gw)} == {"delivered"})
            gw.call(gw.gateway.alerter.deliver_due())  # nothing more is due
            spent = sum(row.cost_nanos for row in gw.ledger())
            assert spent > 2_000_000  # past the limit: every threshold was crossed
            log = _log(gw)
        bodies = receiver.bodies("/ops")
        marks = sorted(int(body["mark"]) for body in bodies)
        assert marks == [5000, 8000, 9500, 10000]
        assert {body["kind"] for body in bodies} == {"threshold"}
        assert {body["member"] for body in bodies} == {"ml"}
        assert len(log) == 4
        assert {(entry.status, entry.attempts) for entry in log} == {("delivered", 1)}


def test_a_failing_receiver_is_retried_until_it_accepts(tmp_path: Path) -> None:
    failures = 3
    with Receiver(fail_first=failures) as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "budgets": [{"budget": "team-ml", "thresholds": ["0.5"], "channels": ["ops"]}],
        }
        with gateway(tmp_path, alerts) as gw:
            secret = gw.create_key(team="ml")
            assert asyncio.run(_fire(gw.openai_base_url, secret, 40)).count(None) == 40
            assert wait_until(lambda: len(receiver.bodies()) == 1)
            assert wait_until(lambda: [e.status for e in _log(gw)] == ["delivered"])
            [entry] = _log(gw)
        assert receiver.attempts == failures + 1
        assert len(receiver.bodies()) == 1
        assert entry.attempts == failures + 1
        assert entry.last_error is None
        assert entry.delivered_at is not None


def test_a_delivery_that_never_succeeds_fails_after_max_attempts(tmp_path: Path) -> None:
    with Receiver(fail_first=1000) as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "budgets": [{"budget": "team-ml", "thresholds": ["0.5"], "channels": ["ops"]}],
            "max_attempts": 3,
        }
        with gateway(tmp_path, alerts) as gw:
            secret = gw.create_key(team="ml")
            asyncio.run(_fire(gw.openai_base_url, secret, 40))
            assert wait_until(lambda: [e.status for e in _log(gw)] == ["failed"])
            [entry] = _log(gw)
        assert receiver.attempts == 3
        assert entry.attempts == 3
        assert entry.last_error is not None
        assert entry.last_error.startswith("HTTP 500")


def test_a_receiver_that_hangs_holds_up_no_answer(tmp_path: Path) -> None:
    """Every request is answered while the receiver still holds the alert's post unanswered:
    the request path only queued it."""
    with Receiver(hang=True) as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url, "timeout_s": 60}},
            "budgets": [{"budget": "team-ml", "thresholds": ["0.5"], "channels": ["ops"]}],
        }
        with gateway(tmp_path, alerts) as gw:
            secret = gw.create_key(team="ml")
            first = asyncio.run(_fire(gw.openai_base_url, secret, 40))
            assert first.count(None) == 40
            assert wait_until(lambda: receiver.attempts == 1)  # the post is in, unanswered
            later = asyncio.run(_fire(gw.openai_base_url, secret, 100))
            assert later.count(None) == 100
            assert receiver.attempts == 1
            assert not receiver.release.is_set()  # still hanging after all 140 answers
            assert [(e.status, e.attempts) for e in _log(gw)] == [("pending", 0)]
            receiver.release.set()
            assert wait_until(lambda: [e.status for e in _log(gw)] == ["delivered"])


class _Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(envelope)
        return "250 OK"


def test_email_through_smtp_and_slack_and_the_members_own_contact(tmp_path: Path) -> None:
    mailbox = _Mailbox()
    port = free_port()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    try:
        with Receiver() as receiver:
            alerts = {
                "smtp": {"host": "127.0.0.1", "port": port, "sender": "sg@example.com"},
                "channels": {
                    "finance": {"kind": "email", "to": ["finance@example.com"]},
                    "slack": {"kind": "slack", "url_env": "TEST_SLACK_URL"},
                },
                "contacts": {"team:ml": [{"kind": "webhook", "url": receiver.url + "/ml"}]},
                "budgets": [
                    {
                        "budget": "*",
                        "thresholds": ["0.5"],
                        "projected": False,
                        "channels": ["finance", "slack"],
                        "notify_member": True,
                    }
                ],
            }

            def configure(data: dict[str, Any]) -> None:
                data["budgets"] = [_budget()]
                data["alerts"] = fast_delivery(alerts)

            gw = GatewayHarness(
                tmp_path / "spendgate.db",
                configure=configure,
                env={"TEST_SLACK_URL": receiver.url + "/slack"},
            ).start()
            try:
                secret = gw.create_key(team="ml")
                asyncio.run(_fire(gw.openai_base_url, secret, 40))
                assert wait_until(lambda: len(receiver.bodies()) == 2 and mailbox.messages)
                assert wait_until(lambda: {e.status for e in _log(gw)} == {"delivered"})
                log = _log(gw)
            finally:
                gw.stop()
            [slack] = receiver.bodies("/slack")
            [own] = receiver.bodies("/ml")
    finally:
        smtp.stop()
    assert set(slack) == {"text", "blocks"}
    assert "team-ml" in slack["text"]
    assert slack["blocks"][0]["type"] == "header"
    assert own["kind"] == "threshold"
    assert own["member"] == "ml"
    [mail] = mailbox.messages
    assert mail.rcpt_tos == ["finance@example.com"]
    content = mail.content.decode()
    assert "Subject: [spendgate] team-ml: ml passed 50% of its limit" in content
    assert sorted(e.channel for e in log) == ["contact:team:ml#0", "finance", "slack"]


def test_refusals_raise_one_alert_per_quiet_interval(tmp_path: Path) -> None:
    with Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "events": [{"kinds": ["refused"], "channels": ["ops"], "quiet_s": 3600}],
        }
        with gateway(tmp_path, alerts, budgets=[_budget("0.0000001", hard=True)]) as gw:
            secret = gw.create_key(team="ml")
            results = asyncio.run(_fire(gw.openai_base_url, secret, 50))
            assert all(isinstance(r, openai.APIStatusError) for r in results)
            assert wait_until(lambda: len(receiver.bodies()) >= 1)
            gw.call(gw.gateway.alerter.deliver_due())
            log = _log(gw)
        [body] = receiver.bodies()
        assert body["kind"] == "refused"
        assert body["subject"] == "team-ml"
        assert len(log) == 1


def test_the_log_in_the_admin_api_and_the_cli(tmp_path: Path) -> None:
    with Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            # the threshold's alert alone: a "projected" one (the forecaster's, on its own
            # timer) could be the one entry the log shows before the threshold's is written
            "budgets": [
                {
                    "budget": "team-ml",
                    "thresholds": ["0.5"],
                    "channels": ["ops"],
                    "projected": False,
                }
            ],
        }
        with gateway(tmp_path, alerts) as gw:
            secret = gw.create_key(team="ml")
            asyncio.run(_fire(gw.openai_base_url, secret, 40))

            def delivered() -> bool:  # the background pass, or this one, sends it
                gw.call(gw.gateway.alerter.deliver_due())
                return [e.status for e in _log(gw)] == ["delivered"]

            assert wait_until(delivered, timeout=60), _log(gw)
            import httpx2

            gw.gateway.admin_token = "t0ken"
            answer = httpx2.get(gw.url + "/admin/alerts", headers={"authorization": "Bearer t0ken"})
            assert answer.status_code == 200
            data = answer.json()
            bad = httpx2.get(
                gw.url + "/admin/alerts?status=lost", headers={"authorization": "Bearer t0ken"}
            )
            # a superscript two is a digit to str.isdigit, not to int(): it was a 500
            odd_limit = httpx2.get(
                gw.url + "/admin/alerts?limit=\u00b2", headers={"authorization": "Bearer t0ken"}
            )
            config = tmp_path / "cli.yaml"
            import yaml

            from harness import base_config

            plain = base_config("http://127.0.0.1:9", tmp_path / "spendgate.db")
            config.write_text(yaml.safe_dump(plain), encoding="utf-8")
            shown = CliRunner().invoke(cli, ["alerts", "-c", str(config)])
        assert data["enabled"] is True
        [entry] = data["data"]
        assert entry["status"] == "delivered"
        assert entry["mark"] == "5000"
        assert entry["channel"] == "ops"
        assert bad.status_code == 400
        assert odd_limit.status_code == 400, odd_limit.text
        assert odd_limit.json()["error"]["param"] == "limit"
        assert shown.exit_code == 0, shown.output
        assert "team-ml" in shown.output
        assert "delivered" in shown.output


@pytest.mark.parametrize("kind", ["webhook", "slack"])
def test_a_channel_needs_one_url(kind: str) -> None:
    from spendgate.config import parse_config
    from spendgate.errors import ConfigError

    with pytest.raises(ConfigError, match="exactly one of url or url_env"):
        parse_config({"alerts": {"channels": {"x": {"kind": kind}}}}, "t.yaml")


def test_a_projected_overrun_is_raised_once_and_the_forecast_is_shown(tmp_path: Path) -> None:
    """At 40 requests (~$0.0006) in the last hour, a $0.01 monthly budget on March 10 would
    run out within a day: "projected to exceed", raised once however often it is checked."""
    from spendgate.clock import ManualClock
    from spendgate.services.forecasts import views_json

    clock = ManualClock(datetime(2026, 3, 10, 12, tzinfo=UTC))
    with Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "budgets": [{"budget": "team-ml", "thresholds": ["0.99"], "channels": ["ops"]}],
            "forecast_interval_s": 3600,
        }

        def configure(data: dict[str, Any]) -> None:
            data["budgets"] = [_budget("0.01")]
            data["alerts"] = fast_delivery(alerts)

        gw = GatewayHarness(tmp_path / "spendgate.db", configure=configure, clock=clock).start()
        try:
            secret = gw.create_key(team="ml")
            assert asyncio.run(_fire(gw.openai_base_url, secret, 40)).count(None) == 40
            clock.advance(1)  # the requests are now in the last hour, not at its end
            raised = [gw.call(gw.gateway.alerter.project()) for _ in range(3)]
            assert wait_until(lambda: len(receiver.bodies()) == 1)
            views = gw.call(gw.gateway.budget_service.overview("team-ml"))
            [data] = gw.call(views_json(gw.gateway.storage, views, clock.now(), timedelta(hours=1)))
        finally:
            gw.stop()
    assert raised == [1, 0, 0]
    [body] = receiver.bodies()
    assert body["kind"] == "projected"
    assert body["member"] == "ml"
    spent = data["spent"]
    forecast = data["forecast"]
    assert forecast["recent"] == spent  # all of it in the last hour
    assert forecast["burn_per_hour"] == spent
    assert forecast["exceeds"] is True
    hours_left = (datetime(2026, 4, 1, tzinfo=UTC) - clock.now()) / timedelta(hours=1)
    assert forecast["projected"] >= spent * (1 + int(hours_left))


def test_downgrades_and_loops_raise_event_alerts(tmp_path: Path) -> None:
    opus, sonnet = "claude-opus-4-1", "claude-sonnet-4-6"
    with Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
            "events": [{"kinds": ["downgraded", "loop_detected"], "channels": ["ops"]}],
        }

        def configure(data: dict[str, Any]) -> None:
            data["models"][opus] = {"provider": "anthropic"}
            data["budgets"] = [{**_budget("0.0000001", hard=False), "soft_thresholds": ["0.5"]}]
            data["routing"] = {
                "tiers": {opus: sonnet},
                "rules": [{"name": "ml-soft", "kind": "downgrade", "budget": "team-ml"}],
            }
            data["runaway"] = {"loop_max_repeats": 2, "loop_window_s": 60}
            data["alerts"] = fast_delivery(alerts)

        gw = GatewayHarness(tmp_path / "spendgate.db", configure=configure).start()
        try:
            secret = gw.create_key(team="ml")
            statuses = []
            with gw.sdk_client("anthropic", secret, max_retries=0) as client:
                for _ in range(4):  # the same body: past 2 repeats it is a loop
                    try:
                        client.messages.create(
                            model=opus, max_tokens=20, messages=PROMPT, extra_headers=SIM
                        )
                        statuses.append(200)
                    except anthropic.APIStatusError as exc:
                        statuses.append(exc.status_code)
            assert wait_until(lambda: len(receiver.bodies()) >= 2)
            gw.call(gw.gateway.alerter.deliver_due())
            served = [row.routed_model for row in gw.ledger(gw.last_key_id)]
        finally:
            gw.stop()
    kinds = sorted(body["kind"] for body in receiver.bodies())
    assert kinds == ["downgraded", "loop_detected"], (kinds, statuses, served)
    assert sonnet in served


def test_alerts_configured_by_a_reload_start_working(tmp_path: Path) -> None:
    from harness import base_config
    from spendgate.config import parse_config

    with Receiver() as receiver:
        with gateway(tmp_path, {}) as gw:  # no alerts at start
            assert not gw.gateway.config.alerts.enabled
            data = base_config(gw.sim.url, gw.db_path)
            data["budgets"] = [_budget()]
            data["alerts"] = fast_delivery(
                {
                    "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
                    "budgets": [{"thresholds": ["0.5"], "channels": ["ops"]}],
                }
            )
            gw.call(gw.gateway.reload(parse_config(data, "reloaded.yaml")))
            secret = gw.create_key(team="ml")
            assert asyncio.run(_fire(gw.openai_base_url, secret, 40)).count(None) == 40
            assert wait_until(lambda: len(receiver.bodies()) == 1)
        [body] = receiver.bodies()
        assert (body["kind"], body["mark"]) == ("threshold", "5000")


def test_a_session_id_cannot_write_slack_markup(tmp_path: Path) -> None:
    """A session budget's member is the id the client sends: alerts to Slack quote it, and
    ``<!channel>`` or ``<https://...|text>`` there notified everyone or drew a link."""
    hostile = "<!channel> <https://evil.example/renew|Renew your spendgate key>"
    with Receiver() as receiver:
        alerts = {
            "channels": {"slack": {"kind": "slack", "url": receiver.url + "/slack"}},
            "budgets": [
                {
                    "budget": "per-session",
                    "thresholds": ["0.5"],
                    "projected": False,
                    "channels": ["slack"],
                }
            ],
        }
        session = {"name": "per-session", "scope": "session", "match": "*", "limit_usd": "0.0004"}
        with gateway(tmp_path, alerts, budgets=[session]) as gw:
            secret = gw.create_key(team="ml")
            client = openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0)
            with client:
                for _ in range(20):
                    client.chat.completions.create(
                        model=MODEL,
                        messages=PROMPT,
                        max_tokens=50,
                        extra_headers={**SIM, "x-spendgate-session": hostile},
                    )
            assert wait_until(lambda: len(receiver.bodies("/slack")) == 1, timeout=60)
    [slack] = receiver.bodies("/slack")
    marked_up = [slack["text"], slack["blocks"][1]["text"]["text"]]
    marked_up += [field["text"] for field in slack["blocks"][2]["fields"]]
    assert any("&lt;!channel&gt;" in text for text in marked_up)
    for text in marked_up:
        assert "<!channel>" not in text, text
        assert "<https://" not in text, text
    assert "<!channel>" in slack["blocks"][0]["text"]["text"]  # plain text: shown as sent
