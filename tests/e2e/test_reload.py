"""Hot reload: POST /admin/reload and SIGHUP re-read the config file of a running
``spendgate serve`` and put new routing rules (prices, budgets, providers) in force
without dropping a request; a bad file is refused, naming the file, key path and rule,
and the running config stays.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.process import (
    ADMIN_TOKEN,
    GatewayProcess,
    create_key_direct,
    http_request,
    read_ledger,
    write_config,
)
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI
from spendgate.simulator.thread import SimulatorThread

pytestmark = pytest.mark.slow

MODEL = "x-spendgate-model"
REQUEST_ID = "x-spendgate-request-id"


def routing(target: str, *extra_rules: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """A config edit: the alias ``default`` serves ``target``, then ``extra_rules``."""

    def configure(data: dict[str, Any]) -> None:
        rule = {"name": "default-model", "kind": "alias", "alias": "default", "to": target}
        data["routing"] = {"rules": [rule, *extra_rules]}

    return configure


def chat(url: str, secret: str, model: str = "default") -> tuple[int, str, str]:
    """One non-streamed chat completion: (status, x-spendgate-model, request id)."""
    result = http_request(
        "POST",
        url + "/v1/chat/completions",
        body={"model": model, "messages": [{"role": "user", "content": "which model?"}]},
        token=secret,
    )
    return result.status, result.headers.get(MODEL, ""), result.headers.get(REQUEST_ID, "")


def reload(url: str, token: str | None = ADMIN_TOKEN) -> Any:
    return http_request("POST", url + "/admin/reload", token=token)


def new_key(url: str, team: str) -> Any:
    body = {"name": f"{team}-key", "team": team}
    return http_request("POST", url + "/admin/keys", body=body, token=ADMIN_TOKEN)


def wait_for_event(
    gateway: GatewayProcess, msg: str, count: int, timeout: float = 10
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = [e for e in gateway.log_events() if e.get("msg") == msg]
        if len(events) >= count:
            return events
        time.sleep(0.02)
    raise AssertionError(f"no {count} {msg!r} log events in {timeout}s:\n{gateway.log()}")


def test_admin_reload_puts_a_changed_routing_rule_in_force(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=routing("gpt-4o"))
        issued = create_key_direct(config, name="reload", team="web")
        with GatewayProcess(config) as gateway:
            status, served, before_id = chat(gateway.url, issued.secret)
            assert (status, served) == (200, "gpt-4o")

            def changed(data: dict[str, Any]) -> None:
                routing("gpt-4o-mini")(data)
                data["orgs"]["acme"]["teams"].append("data")  # a new team, for keys

            write_config(tmp_path, sim.url, configure=changed)
            assert reload(gateway.url, token=None).status == 401  # admin only
            assert chat(gateway.url, issued.secret)[1] == "gpt-4o"  # not reloaded yet
            assert new_key(gateway.url, "data").status == 400  # no such team yet
            answer = reload(gateway.url)
            assert answer.status == 200, answer.body
            assert answer.json() == {
                "reloaded": True,
                "source": str(config),
                "models": 8,
                "rules": 1,
                "budgets": 0,
                "limits": 0,
                "providers": 2,
                "changed": ["orgs", "routing"],
            }
            status, served, after_id = chat(gateway.url, issued.secret)
            assert (status, served) == (200, "gpt-4o-mini")
            created = new_key(gateway.url, "data")
            assert created.status == 201, created.body
            assert created.json()["team"] == "data"
            log = gateway.log()

    rows = {row.request_id: row for row in read_ledger(tmp_path / "spendgate.db")}
    assert rows[before_id].routed_model == "gpt-4o"
    assert rows[after_id].routed_model == "gpt-4o-mini"
    assert rows[after_id].requested_model == "default"
    assert rows[after_id].route_rule == "default-model"
    assert [r.served_model for r in (rows[before_id], rows[after_id])] == ["gpt-4o", "gpt-4o-mini"]
    # The reload is logged with counts, never with a secret.
    assert '"msg":"config reloaded"' in log
    for secret in (SIM_SECRET_OPENAI, SIM_SECRET_ANTHROPIC, ADMIN_TOKEN, issued.secret):
        assert secret not in log


def test_sighup_reloads_the_config_file(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=routing("gpt-4o"))
        issued = create_key_direct(config, name="hup", team="web")
        with GatewayProcess(config) as gateway:
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")
            write_config(tmp_path, sim.url, configure=routing("gpt-4o-mini"))
            gateway.signal(signal.SIGHUP)
            [event] = wait_for_event(gateway, "config reloaded", 1)
            assert event["rules"] == 1
            assert event["changed"] == ["routing"]
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o-mini")
            assert gateway.proc is not None
            assert gateway.proc.poll() is None  # still serving


def test_a_bad_rule_is_refused_naming_it_and_the_running_rules_stay(tmp_path: Path) -> None:
    unknown = {"name": "no-4o", "kind": "rewrite", "models": ["gpt-4o"], "to": "gpt-9"}
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=routing("gpt-4o"))
        issued = create_key_direct(config, name="bad", team="web")
        with GatewayProcess(config) as gateway:
            write_config(tmp_path, sim.url, configure=routing("gpt-4o-mini", unknown))
            answer = reload(gateway.url)
            assert answer.status == 400
            error = answer.json()["error"]
            assert error["type"] == "invalid_request_error"
            assert error["param"] == "routing.rules[1]"
            message = error["message"]
            assert message.startswith(f"{config}: routing.rules[1]: rule 'no-4o' names model")
            assert "'gpt-9'" in message
            assert "the running config stays in force" in message
            # Nothing of the bad file applies, not even its valid alias change.
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")

            # SIGHUP with the same file: logged, the old rules stay, the process serves on.
            gateway.signal(signal.SIGHUP)
            [event] = wait_for_event(gateway, "config not reloaded", 2)[1:]
            assert event["level"] == "error"
            assert "routing.rules[1]: rule 'no-4o'" in event["error"]
            assert str(config) in event["error"]
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")

            # A file saved in another encoding than UTF-8: refused, naming where (was a 500).
            config.write_bytes(
                config.read_bytes().replace(b"gpt-4o-mini", "gpt-\u00f6".encode("latin-1"))
            )
            answer = reload(gateway.url)
            assert answer.status == 400, answer.body
            message = answer.json()["error"]["message"]
            assert message.startswith(f"{config}: not UTF-8 text at line ")
            assert "the running config stays in force" in message
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")

            # Restart-only settings are refused by name.
            def moved(data: dict[str, Any]) -> None:
                routing("gpt-4o-mini")(data)
                data["server"]["drain_timeout_s"] = 1

            write_config(tmp_path, sim.url, configure=moved)
            answer = reload(gateway.url)
            assert answer.status == 400
            assert answer.json()["error"]["param"] == "server.drain_timeout_s"
            assert "restart spendgate to apply it" in answer.json()["error"]["message"]
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")

            # A good file afterwards reloads.
            write_config(tmp_path, sim.url, configure=routing("gpt-4o-mini"))
            assert reload(gateway.url).status == 200
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o-mini")


def test_a_request_in_flight_finishes_on_a_provider_the_reload_removed(tmp_path: Path) -> None:
    """The request's fallback chain was resolved when it arrived: its fallback deployment
    on provider ``openai-alt`` still serves it after a reload has removed that provider."""

    def before(data: dict[str, Any]) -> None:
        data["providers"]["openai-alt"] = dict(data["providers"]["openai"])
        data["models"]["gpt-4o"] = {"provider": "openai", "fallbacks": ["gpt-4o-mini"]}
        data["models"]["gpt-4o-mini"] = {"provider": "openai-alt"}

    def after(data: dict[str, Any]) -> None:
        data["models"]["gpt-4o"] = {"provider": "openai", "fallbacks": ["gpt-4o-mini"]}

    failing = {"x-sim-fail-models": "gpt-4o", "x-sim-status": "503", "x-sim-delay-ms": "1000"}
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=before)
        issued = create_key_direct(config, name="inflight", team="web")
        with GatewayProcess(config) as gateway:
            result: list[Any] = []
            body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "fall back"}]}
            thread = threading.Thread(
                target=lambda: result.append(
                    http_request(
                        "POST",
                        gateway.url + "/v1/chat/completions",
                        body=body,
                        token=issued.secret,
                        headers=failing,
                    )
                )
            )
            thread.start()
            assert sim.wait_until(lambda records: len(records) == 1, 5)  # first attempt sent
            write_config(tmp_path, sim.url, configure=after)
            answer = reload(gateway.url)
            thread.join(10)
            assert answer.status == 200, answer.body
            assert answer.json()["providers"] == 2
            assert len(sim.records) == 2  # the fallback went upstream after the reload
            later = http_request(
                "POST",
                gateway.url + "/v1/chat/completions",
                body=body,
                token=issued.secret,
                headers={**failing, "x-sim-delay-ms": "0"},
            )

    [done] = result
    assert done.status == 200, done.body
    assert done.headers["x-spendgate-fallback-from"] == "gpt-4o"
    assert done.headers[MODEL] == "gpt-4o-mini"
    assert later.status == 200  # a new request falls back on the new config's deployment
    rows = read_ledger(tmp_path / "spendgate.db")
    assert [(r.routed_model, r.provider, r.status) for r in rows] == [
        ("gpt-4o", "openai", 503),
        ("gpt-4o-mini", "openai-alt", 200),
        ("gpt-4o", "openai", 503),
        ("gpt-4o-mini", "openai", 200),
    ]


# ------------------------------------------------------------------------ under load


def variant(index: int) -> Callable[[dict[str, Any]], None]:
    """Config ``index``: even ones serve ``default`` with gpt-4o from provider ``openai``;
    odd ones with gpt-4o-mini from an extra provider ``openai-alt``, which the next even
    one removes again while requests on it are in flight. The budget changes each time."""

    def configure(data: dict[str, Any]) -> None:
        odd = index % 2 == 1
        routing("gpt-4o-mini" if odd else "gpt-4o")(data)
        if odd:
            data["providers"]["openai-alt"] = dict(data["providers"]["openai"])
            data["models"]["gpt-4o-mini"] = {"provider": "openai-alt"}
        data["budgets"] = [
            {"name": "web-month", "scope": "team", "match": "web", "limit_usd": 100 + index}
        ]
        data["limits"] = [
            {"name": "web-inflight", "scope": "team", "match": "web", "concurrency": 64}
        ]

    return configure


@dataclass
class Call:
    stream: bool
    status: int | None = None
    request_id: str | None = None
    model: str | None = None
    completed: bool = False
    error: str | None = None


def one_call(client: openai.OpenAI, stream: bool) -> Call:
    call = Call(stream)
    messages: Any = [{"role": "user", "content": "keep going while the config changes"}]
    try:
        if stream:
            headers = {"x-sim-chunk-delay-ms": "15", "x-sim-output-tokens": "20"}
            with client.chat.completions.with_streaming_response.create(
                model="default", messages=messages, stream=True, extra_headers=headers
            ) as response:
                call.status = response.status_code
                call.request_id = response.headers.get(REQUEST_ID)
                call.model = response.headers.get(MODEL)
                for line in response.iter_lines():
                    call.completed = call.completed or line == "data: [DONE]"
        else:
            raw = client.chat.completions.with_raw_response.create(
                model="default", messages=messages, extra_headers={"x-sim-delay-ms": "150"}
            )
            call.status = raw.status_code
            call.request_id = raw.headers.get(REQUEST_ID)
            call.model = raw.headers.get(MODEL)
            call.completed = bool(raw.parse().choices[0].message.content)
    except Exception as exc:
        call.error = repr(exc)
    return call


def test_reloads_under_load_fail_no_request(tmp_path: Path) -> None:
    reloads = 6
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=variant(0))
        issued = create_key_direct(config, name="load", team="web")
        with GatewayProcess(config) as gateway:
            stop = threading.Event()
            calls: list[Call] = []

            def worker(index: int) -> None:
                client = openai.OpenAI(
                    base_url=gateway.url + "/v1", api_key=issued.secret, max_retries=0, timeout=15
                )
                with client:
                    turn = index
                    while not stop.is_set():
                        calls.append(one_call(client, stream=turn % 2 == 0))
                        turn += 1

            threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
            for thread in threads:
                thread.start()
            answers = []
            assert sim.wait_until(lambda records: len(records) >= 8, 10)
            for index in range(1, reloads + 1):
                time.sleep(0.25)
                write_config(tmp_path, sim.url, configure=variant(index))
                answers.append(reload(gateway.url))
            time.sleep(0.25)
            stop.set()
            for thread in threads:
                thread.join(20)
            budgets = http_request("GET", gateway.url + "/admin/budgets", token=ADMIN_TOKEN)
            final = chat(gateway.url, issued.secret)

    assert [a.status for a in answers] == [200] * reloads, [a.body for a in answers]
    assert final[:2] == (200, "gpt-4o")  # variant(6): even
    print(f"\n{len(calls)} requests across {reloads} reloads")
    assert len(calls) >= 16
    for call in calls:
        assert call.error is None, call
        assert call.status == 200, call
        assert call.completed, call
        assert call.model in ("gpt-4o", "gpt-4o-mini"), call
    assert {call.model for call in calls} == {"gpt-4o", "gpt-4o-mini"}  # both were in force

    rows = {row.request_id: row for row in read_ledger(tmp_path / "spendgate.db")}
    for call in calls:
        assert call.request_id is not None
        row = rows[call.request_id]
        assert row.status == 200, row
        assert row.error is None, row
        assert row.routed_model == call.model
        assert row.cost_nanos > 0
        assert row.provider == ("openai-alt" if call.model == "gpt-4o-mini" else "openai")

    assert budgets.status == 200
    counters = budgets.json()["data"]
    names = {c["name"].partition(":")[0] for c in counters}  # a limit's name: "web-inflight:..."
    assert names == {"web-month", "web-inflight"}
    for counter in counters:
        assert counter["reserved"] == 0, counter
    month = next(c for c in counters if c["name"] == "web-month")
    assert month["configured_limit"] == 106 * 10**9  # the last reload's budget is in force
    assert month["spent"] == sum(rows[call.request_id or ""].cost_nanos for call in calls)


def test_an_empty_file_is_not_put_in_force(tmp_path: Path) -> None:
    """A config as `spendgate init` writes it (server settings at their defaults, the
    database beside the file) emptied on disk, or with every line commented out (an editor
    saving an empty buffer, `>` truncating before it writes): a reload would have put a
    config of defaults in force, with no provider, model or budget. Refused, naming why;
    the running config stays."""

    def as_init_writes(data: dict[str, Any]) -> None:
        routing("gpt-4o")(data)
        data.pop("server")
        data["storage"] = {"url": "sqlite:///spendgate.db"}

    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=as_init_writes)
        issued = create_key_direct(config, name="empty", team="web")
        with GatewayProcess(config) as gateway:
            assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")
            for text in ("", "\n\n", "# models:\n#   gpt-4o: {provider: openai}\n"):
                config.write_text(text, encoding="utf-8")
                answer = reload(gateway.url)
                assert answer.status == 400, answer.body
                message = answer.json()["error"]["message"]
                assert message.startswith(
                    f"{config}: the file holds no setting (empty, or only comments): a reload "
                    "would drop every provider, model and budget."
                ), message
                assert chat(gateway.url, issued.secret)[:2] == (200, "gpt-4o")
