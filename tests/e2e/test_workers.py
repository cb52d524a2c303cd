"""``spendgate serve --workers N``: one port, several processes, one supervisor.

Each test runs a real supervisor (``python -m spendgate serve --workers N``) in front of
the simulator and reaches each worker through a keep-alive connection that landed on it
(`e2e.workers_world`): an admin reload through one worker is in force in every worker,
SIGHUP to the supervisor reloads them all, ``/metrics`` counts what every worker served,
a worker killed with SIGKILL is restarted, and SIGTERM lets the requests in flight in
every worker finish before anything exits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from e2e.process import (
    ADMIN_TOKEN,
    GatewayProcess,
    create_key_direct,
    gateway_env,
    spendgate_cli,
    write_config,
)
from e2e.workers_world import (
    WorkerConnection,
    admin,
    close_all,
    configure_storage,
    connections_to_every_worker,
    read_rows,
    start_workers,
    storage_url,
    storage_urls,
    wait_for_log,
)
from spendgate.simulator.thread import SimulatorThread
from spendgate.supervisor import RestartPolicy

pytestmark = pytest.mark.slow

EXTRA = "house-model-2"
PROMPT = [{"role": "user", "content": "Say something short."}]


def model_ids(connection: WorkerConnection, secret: str) -> set[str]:
    status, body = connection.request("GET", "/v1/models", token=secret)
    assert status == 200, body
    return {model["id"] for model in body["data"]}


def add_model(config: Path) -> None:
    data = yaml.safe_load(config.read_text(encoding="utf-8"))
    data["models"][EXTRA] = {
        "provider": "openai",
        "upstream_model": "gpt-4o-mini",
        "price": {"input": "1", "output": "2"},
    }
    config.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def chat(connection: WorkerConnection, secret: str, **headers: str) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 20}
    connection.conn.request(
        "POST",
        "/v1/chat/completions",
        body=json.dumps(body).encode(),
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {secret}",
            **headers,
        },
    )
    response = connection.conn.getresponse()
    raw = response.read()
    assert response.status == 200, raw
    answer: dict[str, Any] = json.loads(raw)
    return answer


@pytest.mark.parametrize("kind", storage_urls())
def test_an_admin_reload_through_one_worker_is_in_force_in_every_worker(
    tmp_path: Path, kind: str
) -> None:
    with SimulatorThread() as sim:
        config, process = start_workers(tmp_path, sim.url, 3, url=storage_url(kind, tmp_path))
        try:
            key = create_key_direct(config, name="reload", team="ml")
            workers = connections_to_every_worker(process, 3)
            assert len({w.pid for w in workers.values()}) == 3
            for worker in workers.values():
                assert EXTRA not in model_ids(worker, key.secret)

            add_model(config)
            answer = admin(workers[1], "POST", "/admin/reload")

            assert answer["reloaded"] is True
            others = answer["workers"]["others"]
            assert sorted(o["index"] for o in others) == [0, 2]
            assert all(o["ok"] for o in others), others
            for worker in workers.values():  # each reloaded before the answer came
                assert EXTRA in model_ids(worker, key.secret), worker.worker
            audit = admin(workers[2], "GET", "/admin/audit?action=config.reload")["data"]
            assert [entry["actor"] for entry in audit] == ["env"]  # one admin change, one entry
            close_all(workers)
        finally:
            assert process.stop() == 0


def test_sighup_to_the_supervisor_reloads_every_worker(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        config, process = start_workers(tmp_path, sim.url, 2, url=storage_url("sqlite", tmp_path))
        try:
            key = create_key_direct(config, name="hup", team="ml")
            workers = connections_to_every_worker(process, 2)
            add_model(config)
            process.signal(signal.SIGHUP)
            wait_for_log(process, "workers reloaded")
            for worker in workers.values():
                assert EXTRA in model_ids(worker, key.secret), worker.worker
            audit = admin(workers[0], "GET", "/admin/audit?action=config.reload")["data"]
            assert [entry["actor"] for entry in audit] == ["signal:SIGHUP"]  # once, not per worker
            close_all(workers)
        finally:
            assert process.stop() == 0


def test_metrics_count_what_every_worker_served(tmp_path: Path) -> None:
    url = storage_url("sqlite", tmp_path)
    prom = tmp_path / "prom"
    with SimulatorThread() as sim:
        config, process = start_workers(
            tmp_path, sim.url, 3, url=url, env={"PROMETHEUS_MULTIPROC_DIR": str(prom)}
        )
        try:
            key = create_key_direct(config, name="metrics", team="ml")
            workers = connections_to_every_worker(process, 3)
            for worker in workers.values():  # 1 + 2 + 3 requests
                for _ in range(worker.worker + 1):
                    chat(worker, key.secret)
            status, body = workers[0].request("GET", "/metrics", token=ADMIN_TOKEN)
            assert status == 200
            close_all(workers)
        finally:
            assert process.stop() == 0

    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    served = sum(
        s.value
        for s in families["spendgate_requests"].samples
        if s.name == "spendgate_requests_total" and s.labels["outcome"] == "served"
    )
    rows = read_rows(url)
    assert len(rows) == 6
    assert served == 6
    tokens = {
        kind: sum(
            s.value
            for s in families["spendgate_tokens"].samples
            if s.name == "spendgate_tokens_total" and s.labels["type"] == kind
        )
        for kind in ("input", "output")
    }
    assert tokens == {
        "input": sum(r.input_tokens for r in rows),
        "output": sum(r.output_tokens for r in rows),
    }
    cost = sum(s.value for s in families["spendgate_cost_dollars"].samples)
    assert cost == pytest.approx(sum(r.cost_nanos for r in rows) / 1e9)
    # every worker wrote its own file of counters
    assert len({p.name.split("_")[-1] for p in prom.glob("counter_*.db")}) == 3


def test_a_worker_killed_is_restarted_and_the_port_keeps_serving(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        config, process = start_workers(tmp_path, sim.url, 2, url=storage_url("sqlite", tmp_path))
        try:
            key = create_key_direct(config, name="restart", team="ml")
            workers = connections_to_every_worker(process, 2)
            victim = workers[1]
            os.kill(victim.pid, signal.SIGKILL)
            wait_for_log(process, "worker died: restarting")
            wait_for_log(process, "all workers listening", count=2)
            close_all(workers)
            again = connections_to_every_worker(process, 2)
            assert again[1].pid != victim.pid
            assert again[0].pid == workers[0].pid
            chat(again[1], key.secret)
            close_all(again)
            died = [e for e in process.log_events() if e.get("msg") == "worker died: restarting"]
            assert [(e["worker"], e["exit_code"], e["restarts"]) for e in died] == [(1, -9, 1)]
        finally:
            assert process.stop() == 0


def test_sigterm_lets_every_workers_requests_finish(tmp_path: Path) -> None:
    url = storage_url("sqlite", tmp_path)
    with SimulatorThread() as sim:
        config, process = start_workers(tmp_path, sim.url, 2, url=url)
        key = create_key_direct(config, name="drain", team="ml")
        workers = connections_to_every_worker(process, 2)
        answers: list[dict[str, Any]] = []

        def held(worker: WorkerConnection) -> None:
            answers.append(chat(worker, key.secret, **{"x-sim-delay-ms": "1500"}))

        threads = [threading.Thread(target=held, args=(w,)) for w in workers.values()]
        for thread in threads:
            thread.start()
        assert sim.wait_until(lambda records: len(records) == 2, 10)
        process.signal(signal.SIGTERM)
        for thread in threads:
            thread.join(20)
        assert process.wait(30) == 0
        close_all(workers)
    assert len(answers) == 2
    rows = read_rows(url)
    assert len(rows) == 2
    assert all(row.status == 200 and not row.unreconciled for row in rows)


def test_restart_policy_backs_off_and_gives_up_on_a_storm() -> None:
    policy = RestartPolicy(first_backoff_s=0.1, max_backoff_s=1.0, storm=4, window_s=10)
    assert [policy.died(t) for t in (0, 1, 2, 3)] == [0.1, 0.2, 0.4, 0.8]
    assert policy.died(4) is None  # a fifth death within 10 s
    calm = RestartPolicy(first_backoff_s=0.1, max_backoff_s=1.0, storm=4, window_s=10)
    # deaths far apart never add up to a storm, and the backoff starts over
    assert [calm.died(t) for t in (0, 20, 40, 60, 80, 100)] == [0.1] * 6


SUPERVISE = """
import sys
from spendgate.logs import configure
from spendgate.settings import Settings
from spendgate.supervisor import Plan, run
configure("info")
env = Settings.from_environment().env
plan = Plan(sys.argv[1], "127.0.0.1", int(sys.argv[2]), 2, 5.0, env, reuse_port=False)
sys.exit(run(plan))
"""


def supervised(config: Path, script: str, log_path: Path) -> GatewayProcess:
    """A supervisor run by ``script`` (given the config and a port) instead of ``serve``,
    logging to ``log_path``, as a `GatewayProcess` to wait on and stop."""
    process = GatewayProcess(config)
    log = log_path.open("a", encoding="utf-8")
    process.proc = subprocess.Popen(
        [sys.executable, "-c", script, str(config), str(process.port)],
        env=gateway_env(),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    process.log_path = log_path
    process._log = log
    return process


def test_without_so_reuseport_the_workers_share_the_supervisors_socket(tmp_path: Path) -> None:
    """The design for platforms without SO_REUSEPORT, forced here: the supervisor listens
    once and both workers accept on the socket they inherited."""
    url = storage_url("sqlite", tmp_path)
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=configure_storage(url))
        process = supervised(config, SUPERVISE, tmp_path / "inherited.log")
        try:
            wait_for_log(process, "all workers listening")
            starting = next(e for e in process.log_events() if e["msg"] == "supervisor starting")
            assert starting["sockets"] == "inherited"
            key = create_key_direct(config, name="inherit", team="ml")
            workers = connections_to_every_worker(process, 2)
            for worker in workers.values():
                chat(worker, key.secret)
            close_all(workers)
        finally:
            assert process.stop() == 0
    assert len(read_rows(url)) == 2


STORM_AFTER_ONE = """
import asyncio, sys
from spendgate.logs import configure
from spendgate.settings import Settings
from spendgate.supervisor import Plan, RestartPolicy, Supervisor
configure("info")
env = Settings.from_environment().env
plan = Plan(sys.argv[1], "127.0.0.1", int(sys.argv[2]), 2, 5.0, env)
policy = RestartPolicy(first_backoff_s=0.1, max_backoff_s=0.2, storm=1, window_s=600)
sys.exit(asyncio.run(Supervisor(plan, policy).run()))
"""


def test_a_bad_config_file_and_a_dead_worker_leave_the_others_serving(tmp_path: Path) -> None:
    """A config file made bad (SIGHUP refused it: the running config stays), then a worker
    killed: its restarts read the bad file and exit before they listen. They counted as a
    restart storm, which stopped the supervisor and the healthy worker with it (with the
    default policy within a minute). Now the other worker serves on, the restart is tried
    again until the file is good, and no storm is declared (here: after one death)."""
    url = storage_url("sqlite", tmp_path)
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=configure_storage(url))
        good = config.read_text(encoding="utf-8")
        process = supervised(config, STORM_AFTER_ONE, tmp_path / "storm.log")
        try:
            wait_for_log(process, "all workers listening")
            key = create_key_direct(config, name="storm", team="ml")
            workers = connections_to_every_worker(process, 2)
            config.write_text(good.replace("gpt-4o-mini:", "gpt-4o-mini: [", 1), encoding="utf-8")
            process.signal(signal.SIGHUP)
            wait_for_log(process, "config not reloaded", count=2)
            os.kill(workers[1].pid, signal.SIGKILL)
            wait_for_log(process, "a worker could not restart: retrying", count=3)
            assert process.proc.poll() is None  # the supervisor runs on
            chat(workers[0], key.secret)  # and the healthy worker serves, on the old config
            config.write_text(good, encoding="utf-8")
            wait_for_log(process, "all workers listening", count=2)
            close_all(workers)
            again = connections_to_every_worker(process, 2)
            chat(again[1], key.secret)
            close_all(again)
            messages = [e["msg"] for e in process.log_events()]
            assert "workers keep dying: giving up" not in messages
            assert messages.count("worker died: restarting") == 1  # the kill itself
        finally:
            assert process.stop() == 0
    assert len(read_rows(url)) == 2


PINNED_STORM_AFTER_ONE = STORM_AFTER_ONE.replace(
    "env = ",
    "from spendgate.config import load_config\n"
    "from spendgate.gateway import restart_only_digests\n"
    "pinned = restart_only_digests(load_config(sys.argv[1]))\n"
    "env = ",
).replace("5.0, env)", "5.0, env, pinned=pinned)")


def test_a_restarted_worker_refuses_an_empty_file_and_a_restart_only_change(
    tmp_path: Path,
) -> None:
    """A worker restarted while the file holds no setting (only comments) started on every
    default: no provider, model or budget, whichever connections the kernel gave it. It
    refuses the file now, as a reload does, and so does a restart that would put in force
    a restart-only change (another storage.url: its rows in another database) that a
    reload refuses: the other worker serves on, and the restart comes once the file is
    put back."""
    url = storage_url("sqlite", tmp_path)
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=configure_storage(url))
        good = config.read_text(encoding="utf-8")
        process = supervised(config, PINNED_STORM_AFTER_ONE, tmp_path / "pinned.log")
        try:
            wait_for_log(process, "all workers listening")
            key = create_key_direct(config, name="pinned", team="ml")
            workers = connections_to_every_worker(process, 2)
            config.write_text("# being rewritten\n", encoding="utf-8")
            os.kill(workers[1].pid, signal.SIGKILL)
            wait_for_log(process, "a worker could not restart: retrying", count=2)
            assert "the file holds no setting (empty, or only comments): a restarted " in (
                process.log()
            )
            other = tmp_path / "other.db"
            config.write_text(good.replace(url.url, f"sqlite:///{other}"), encoding="utf-8")
            assert config.read_text(encoding="utf-8") != good
            wait_for_log(process, "a worker could not restart: retrying", count=4)
            assert "storage: changed since spendgate started" in process.log()
            assert not other.exists()
            chat(workers[0], key.secret)  # the healthy worker serves on
            config.write_text(good, encoding="utf-8")
            wait_for_log(process, "all workers listening", count=2)
            close_all(workers)
            again = connections_to_every_worker(process, 2)
            chat(again[1], key.secret)
            assert model_ids(again[1], key.secret) >= {"gpt-4o-mini"}
            close_all(again)
        finally:
            assert process.stop() == 0
    assert len(read_rows(url)) == 2


def test_a_worker_that_cannot_start_stops_the_supervisor_with_its_reason(tmp_path: Path) -> None:
    """No restart loop for a start that cannot succeed (here: a database folder missing)."""
    with SimulatorThread() as sim:
        missing = tmp_path / "missing" / "spendgate.db"
        config = write_config(
            tmp_path, sim.url, configure=configure_storage(f"sqlite:///{missing}")
        )
        done = spendgate_cli("serve", "-c", str(config), "--port", "0", "--workers", "2")
    assert done.returncode == 1
    assert "cannot start" in done.stderr
    assert "a worker could not start: stopping" in done.stderr
    assert "worker died: restarting" not in done.stderr


def test_a_second_supervisor_on_a_port_in_use_refuses_to_start(tmp_path: Path) -> None:
    """SO_REUSEPORT lets a second ``serve --workers N`` bind a port the first listens on
    (same user): it started, listened beside it, and took some of its connections (with
    its own config, and perhaps its own database). It is refused, as a single ``serve``
    is, and the first serves on."""
    with SimulatorThread() as sim:
        config, process = start_workers(tmp_path, sim.url, 2, url=storage_url("sqlite", tmp_path))
        try:
            port = process.url.rsplit(":", 1)[1]
            second = spendgate_cli("serve", "-c", str(config), "--port", port, "--workers", "2")
            assert second.returncode == 1
            assert "already in use" in second.stderr
            assert "all workers listening" not in second.stderr
            close_all(connections_to_every_worker(process, 2))  # the first serves on
        finally:
            assert process.stop() == 0


def test_workers_drain_and_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        _config, process = start_workers(tmp_path, sim.url, 2, url=storage_url("sqlite", tmp_path))
        workers = connections_to_every_worker(process, 2)
        pids = [w.pid for w in workers.values()]
        close_all(workers)
        assert process.kill9() == -9
        wait_for_log(process, "stopped", count=2)  # each worker: control socket closed, drained
    for pid in pids:
        for _ in range(200):  # reaped by init once it exits; counted, not timed
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                break
            threading.Event().wait(0.05)
        assert not Path(f"/proc/{pid}").exists() or _zombie(pid), pid


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True
