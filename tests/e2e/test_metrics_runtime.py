"""GET /metrics beyond the counters of outcomes (test_metrics.py): the gateway's own added
latency, the admission line (depth while requests wait, and how long they waited), circuit
breakers, loops, alerts, the opt-in user label, and the listener of ``metrics.port`` with
its own token. A real gateway on loopback, the simulator upstream, the openai SDK; the
exposition parsed with prometheus_client's own parser. Waits are driven by counts (the
gauge reads the number of waiters), never by wall-clock thresholds."""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from alertkit import Receiver, fast_delivery, wait_until
from harness import GatewayHarness
from spendgate.api.metrics import LISTENER
from spendgate.config.metrics import MetricsConfig
from spendgate.errors import ConfigError
from spendgate.simulator import SimulatorOptions

TOKEN = "metrics-admin-token"
SCRAPE = "scrape-only-token"
CHAT = "gpt-4o-mini"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@contextmanager
def gateway(
    tmp_path: Path,
    configure: Any = None,
    sim_options: SimulatorOptions | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path / f"{uuid.uuid4().hex}.db",
        configure=configure,
        sim_options=sim_options,
        env={"SPENDGATE_ADMIN_TOKEN": TOKEN, **(env or {})},
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def scrape(url: str, headers: dict[str, str] | None = None) -> list[Sample]:
    response = httpx2.get(f"{url}/metrics", headers=AUTH if headers is None else headers)
    assert response.status_code == 200, response.text
    return [s for f in text_string_to_metric_families(response.text) for s in f.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


def chat(client: Any, content: str, **options: Any) -> Any:
    return client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": content}], **options
    )


# ------------------------------------------------------------------------ added latency


def test_overhead_is_the_duration_less_the_upstream_wait(tmp_path: Path) -> None:
    """Every served request has an overhead observation; the provider held each answer's
    first byte 100 ms, so durations exceed overheads by at least that much a request, and
    no user or key label appears unless configured."""
    delay = SimulatorOptions(first_byte_delay_ms=100, chunk_delay_ms=5)
    with gateway(tmp_path, sim_options=delay) as gw:
        secret = gw.create_key(team="ml", service="search", user="alice")
        key_id = gw.last_key_id
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            for i in range(3):
                chat(client, f"body {i} {uuid.uuid4().hex}", max_tokens=20)
            for i in range(2):
                stream = chat(client, f"stream {i} {uuid.uuid4().hex}", max_tokens=30, stream=True)
                assert sum(1 for _ in stream) > 3
        gw.call(gw.gateway.settled())
        samples = scrape(gw.url)
        rows = gw.ledger()
        assert len(rows) == 5

        count = total(samples, "spendgate_overhead_seconds_count", model=CHAT)
        assert count == total(samples, "spendgate_request_duration_seconds_count") == 5
        assert total(samples, "spendgate_ttfb_seconds_count", model=CHAT) == 5
        own = total(samples, "spendgate_overhead_seconds_sum")
        duration = total(samples, "spendgate_request_duration_seconds_sum")
        assert math.isclose(duration, sum(r.latency_ms for r in rows) / 1000, rel_tol=1e-6)
        assert 0 <= own <= duration - 5 * 0.1 + 1e-6
        assert total(samples, "spendgate_requests_in_flight") == 0

        labels = {name for s in samples for name in s.labels}
        assert not labels & {"user", "key"}
        assert not {v for s in samples for v in s.labels.values()} & {"alice", key_id}


# ---------------------------------------------------------------------- admission line

LINE = "team-line"
WAITERS = 3


def _line(data: dict[str, Any]) -> None:
    # One request's worst case (1,000 output tokens of gpt-4o-mini, ~$0.0006) fits; two do
    # not, and none may be clamped below 1,000: a second request waits in line.
    data["budgets"] = [
        {"name": LINE, "scope": "team", "match": "ml", "limit_usd": "0.0009", "period": "daily"}
    ]
    data["budget_settings"] = {
        "admission_wait_s": 60,
        "admission_queue_max": 64,
        "min_output_tokens": 1000,
    }


def test_queue_depth_while_requests_wait_and_their_waits(tmp_path: Path) -> None:
    with gateway(tmp_path, _line) as gw:
        secret = gw.create_key(team="ml", service="search")
        slow = {"x-sim-output-tokens": "1000", "x-sim-chunk-delay-ms": "50"}
        with (
            gw.sdk_client("openai", secret, max_retries=0) as holder,
            ThreadPoolExecutor(max_workers=WAITERS) as pool,
        ):
            stream = chat(holder, "hold the room", max_tokens=1000, stream=True, extra_headers=slow)
            events = iter(stream)
            next(events)  # admitted: its worst case is reserved until it settles
            reserved = total(scrape(gw.url), "spendgate_budget_reserved", budget=LINE)
            assert 0.0009 / 2 < reserved <= 0.0009  # room for one, not two

            started = threading.Barrier(WAITERS + 1)

            def wait_in_line(i: int) -> str:
                with gw.sdk_client("openai", secret, max_retries=0) as client:
                    started.wait(timeout=30)
                    answer = chat(
                        client,
                        f"waiter {i}",
                        max_tokens=1000,
                        extra_headers={"x-sim-output-tokens": "20"},
                    )
                    return str(answer.id)

            waiting = [pool.submit(wait_in_line, i) for i in range(WAITERS)]
            started.wait(timeout=30)

            def depth() -> float:
                return total(scrape(gw.url), "spendgate_admission_waiting", budget=LINE)

            assert wait_until(lambda: depth() == WAITERS, timeout=30), depth()
            assert len(gw.ledger()) == 0  # nobody was answered yet
            stream.close()  # the holder leaves: settled at what it got, the line moves on
            answers = [future.result(timeout=60) for future in waiting]
        assert len(answers) == WAITERS

        gw.call(gw.gateway.settled())
        samples = scrape(gw.url)
        assert depth() == 0
        wait = "spendgate_admission_wait_seconds"
        assert total(samples, f"{wait}_count", budget=LINE, outcome="admitted") == WAITERS
        assert total(samples, f"{wait}_count", outcome="timed_out") == 0
        assert total(samples, f"{wait}_sum", budget=LINE) > 0
        served = [row for row in gw.ledger() if not row.client_disconnected]
        assert len(served) == WAITERS
        assert total(samples, "spendgate_requests_total", outcome="served") == WAITERS + 1


# ------------------------------------------------------------- breakers, loops, alerts


def test_breakers_loops_and_alerts(tmp_path: Path) -> None:
    with Receiver(fail_first=1) as receiver:

        def configure(data: dict[str, Any]) -> None:
            data["runaway"] = {
                "breaker_failures": 2,
                "breaker_cooldown_s": 600,
                "loop_max_repeats": 2,
                "loop_window_s": 600,
            }
            data["alerts"] = fast_delivery(
                {
                    "channels": {"ops": {"kind": "webhook", "url": receiver.url}},
                    "events": [{"kinds": ["breaker_opened", "loop_detected"], "channels": ["ops"]}],
                }
            )

        with gateway(tmp_path, configure) as gw:
            failing = gw.create_key(team="ml", service="flaky")
            looping = gw.create_key(team="web", service="agent")
            with gw.sdk_client("openai", failing, max_retries=0) as client:
                for i in range(2):
                    with pytest.raises(openai.InternalServerError):
                        chat(client, f"fail {i}", extra_headers={"x-sim-status": "500"})
                with pytest.raises(openai.APIStatusError) as refused:
                    chat(client, "after the breaker opened")
                assert refused.value.status_code == 503
            with gw.sdk_client("openai", looping, max_retries=0) as client:
                for _ in range(2):
                    chat(client, "the same thing again", max_tokens=10)
                for _ in range(2):  # detected, then refused while blocked
                    with pytest.raises(openai.RateLimitError):
                        chat(client, "the same thing again", max_tokens=10)
            gw.call(gw.gateway.settled())

            samples = scrape(gw.url)
            assert total(samples, "spendgate_breakers_open", model=CHAT, state="open") == 1
            assert total(samples, "spendgate_breaker_opens_total", model=CHAT) == 1
            assert total(samples, "spendgate_refusals_total", reason="circuit-breaker") == 1
            detections = "spendgate_loop_detections_total"
            assert total(samples, detections, scope="pair", team="web", model=CHAT) == 1
            assert total(samples, "spendgate_loops_blocked", scope="pair", model=CHAT) == 1
            assert total(samples, "spendgate_refusals_total", reason="loop-detection") == 2

            # Two alerts, three attempts (the receiver failed the first): as the log says.
            assert wait_until(lambda: len(receiver.posts) == 2)
            store = gw.gateway.storage.alert_store
            assert store is not None
            log = gw.call(store.log(100))
            samples = scrape(gw.url)
            raised = "spendgate_alerts_raised_total"
            assert total(samples, raised) == len(log) == 2
            assert total(samples, raised, kind="breaker_opened") == 1
            assert total(samples, raised, kind="loop_detected") == 1
            deliveries = "spendgate_alert_deliveries_total"
            assert total(samples, deliveries, channel_kind="webhook", outcome="delivered") == 2
            assert total(samples, deliveries, channel_kind="webhook", outcome="retrying") == 1
            assert total(samples, deliveries) == receiver.attempts == 3
            assert sum(d.attempts for d in log) == 3
            assert {d.status for d in log} == {"delivered"}
            assert total(samples, "spendgate_alert_events_dropped_total") == 0


# --------------------------------------------------------------- opt-in personal labels


def test_the_user_label_only_when_configured_and_capped(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["metrics"] = {"labels": ["user"], "max_label_values": 1}

    with gateway(tmp_path, configure) as gw:
        for user in ("alice", "bob", "carol"):
            secret = gw.create_key(team="ml", user=user)
            with gw.sdk_client("openai", secret, max_retries=0) as client:
                chat(client, f"hi from {user}", max_tokens=10)
        gw.call(gw.gateway.settled())
        samples = scrape(gw.url)
        requests = "spendgate_requests_total"
        assert total(samples, requests, outcome="served", user="alice") == 1
        assert total(samples, requests, outcome="served", user="_other") == 2  # past the cap
        assert total(samples, requests, user="bob") == 0
        cost = sum(row.cost_nanos for row in gw.ledger() if row.user == "alice") / 1e9
        assert math.isclose(
            total(samples, "spendgate_cost_dollars_total", user="alice"), cost, rel_tol=1e-9
        )
        assert not any("key" in s.labels for s in samples if s.name == requests)


# ---------------------------------------------------------------- the metrics listener


def test_a_listener_of_its_own_with_its_own_token(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["metrics"] = {"port": 0, "host": "127.0.0.1", "token_env": "SCRAPE_TOKEN"}

    with gateway(tmp_path, configure, env={"SCRAPE_TOKEN": SCRAPE}) as gw:
        secret = gw.create_key(team="ml")
        with gw.sdk_client("openai", secret, max_retries=0) as client:
            chat(client, "one request", max_tokens=10)
        gw.call(gw.gateway.settled())
        port = gw.running.runner.app[LISTENER].port
        assert port is not None
        assert port != gw.running.port
        url = f"http://127.0.0.1:{port}"

        scraped = scrape(url, {"authorization": f"Bearer {SCRAPE}"})
        assert total(scraped, "spendgate_requests_total", outcome="served") == 1
        assert total(scrape(url), "spendgate_requests_total", outcome="served") == 1  # admin
        assert httpx2.get(f"{url}/metrics").status_code == 401
        wrong = {"authorization": "Bearer not-the-token"}
        assert httpx2.get(f"{url}/metrics", headers=wrong).status_code == 401
        # Nothing else is served there: not the API, not the admin API, not health.
        posted = httpx2.post(
            f"{url}/v1/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": CHAT, "messages": [{"role": "user", "content": "x"}]},
        )
        assert posted.status_code == 404
        assert httpx2.get(f"{url}/admin/keys", headers=AUTH).status_code == 404
        assert httpx2.get(f"{url}/healthz").status_code == 404
        # The scrape token opens /metrics on the main port too, and nothing else.
        scrape_auth = {"authorization": f"Bearer {SCRAPE}"}
        assert total(scrape(gw.url, scrape_auth), "spendgate_requests_total") == 1
        assert httpx2.get(f"{gw.url}/admin/keys", headers=scrape_auth).status_code == 401
        assert len(gw.sim.records) == 1

    # Stopped with the gateway.
    with pytest.raises(httpx2.TransportError):
        httpx2.get(f"{url}/metrics", timeout=2)


def test_the_scrape_token_alone_without_an_admin_token(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["metrics"] = {"port": 0, "token_env": "SCRAPE_TOKEN"}

    harness = GatewayHarness(
        tmp_path / "alone.db", configure=configure, env={"SCRAPE_TOKEN": SCRAPE}
    ).start()
    try:
        port = harness.running.runner.app[LISTENER].port
        url = f"http://127.0.0.1:{port}"
        assert httpx2.get(f"{url}/metrics").status_code == 401  # not "admin disabled"
        scrape(url, {"authorization": f"Bearer {SCRAPE}"})
        assert httpx2.get(f"{harness.url}/admin/keys").status_code == 403  # admin_disabled
    finally:
        harness.stop()


def test_the_metrics_section_takes_a_restart(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        running = gw.gateway.config
        changed = running.model_copy(update={"metrics": MetricsConfig(labels=["user"])})
        with pytest.raises(ConfigError, match=r"metrics\.labels: cannot change while"):
            gw.call(gw.gateway.reload(changed))
        assert gw.gateway.config is running


@pytest.mark.slow
def test_the_metrics_port_with_several_workers(tmp_path: Path) -> None:
    """``serve --workers 2``: both workers listen on the metrics port (SO_REUSEPORT); every
    scrape there answers what both served, added latency included."""
    from e2e.process import create_key_direct, free_port
    from e2e.workers_world import close_all, connections_to_every_worker, start_workers
    from spendgate.simulator.thread import SimulatorThread

    port = free_port()

    def edit(data: dict[str, Any]) -> None:
        data["metrics"] = {"port": port, "host": "127.0.0.1", "token_env": "SCRAPE_TOKEN"}

    with SimulatorThread() as sim:
        url = f"sqlite:///{tmp_path / 'workers.db'}"
        env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "prom"), "SCRAPE_TOKEN": SCRAPE}
        config, process = start_workers(tmp_path, sim.url, 2, url=url, edit=edit, env=env)
        try:
            key = create_key_direct(config, name="metrics", team="ml")
            workers = connections_to_every_worker(process, 2)
            for worker in workers.values():
                status, _ = worker.request(
                    "POST",
                    "/v1/chat/completions",
                    token=key.secret,
                    body={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]},
                )
                assert status == 200
            close_all(workers)
            for _ in range(4):  # a new connection each time: either worker may answer
                samples = scrape(f"http://127.0.0.1:{port}", {"authorization": f"Bearer {SCRAPE}"})
                assert total(samples, "spendgate_requests_total", outcome="served") == 2
                assert total(samples, "spendgate_overhead_seconds_count") == 2
            assert httpx2.get(f"http://127.0.0.1:{port}/metrics").status_code == 401
        finally:
            assert process.stop() == 0


# ------------------------------------------------------------- attempts that reached nobody


def test_an_unreachable_fallback_is_counted_under_the_name_the_client_sent(
    tmp_path: Path,
) -> None:
    """gpt-4o answers 503, its fallback's one deployment cannot be reached (no row). Every
    attempt of the request counts under the model the client sent and its surface, as a
    row's labels do; the unreachable one counted under the fallback's name with an empty
    surface."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]

    def configure(data: dict[str, Any]) -> None:
        data["providers"]["dead"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{closed}/v1",
            "api_key_env": "SIM_OPENAI_KEY",
        }
        data["models"]["dead-mini"] = {
            "deployments": [{"provider": "dead", "model": "gpt-4o-mini"}],
            "price": {"input": "1", "output": "2"},
        }
        data["models"]["gpt-4o"]["fallbacks"] = ["dead-mini"]

    with gateway(tmp_path, configure) as gw:
        secret = gw.create_key(team="ml", service="bot")
        client = gw.sdk_client("openai", secret, max_retries=0)
        with client, pytest.raises(openai.APIStatusError):
            client.chat.completions.create(
                model="gpt-4o",
                messages=[{"role": "user", "content": "hi"}],
                extra_headers={"x-sim-fail-models": "gpt-4o", "x-sim-status": "503"},
            )
        gw.call(gw.gateway.settled())
        samples = scrape(gw.url)
    failed = [
        s.labels
        for s in samples
        if s.name == "spendgate_requests_total" and s.labels["outcome"] == "upstream_failed"
    ]
    assert sorted((f["status"], f["provider"]) for f in failed) == [
        ("502", "dead"),
        ("503", "openai"),
    ]
    assert {(f["model"], f["surface"], f["team"]) for f in failed} == {
        ("gpt-4o", "openai.chat", "ml")
    }
    unreachable = "spendgate_upstream_failures_total"
    assert total(samples, unreachable, model="dead-mini", reason="upstream_unavailable") == 1
