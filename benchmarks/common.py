"""Shared plumbing for the benchmarks: processes on loopback, a load generator, statistics.

Every figure is measured side by side in one run: the same load generator sends the same
requests to the simulator directly and through the gateway, in interleaved rounds, so
machine noise hits both paths alike. Reported: medians and tail percentiles.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ADMIN = "bench-admin-token"
SOURCE = "__source__"  # a variant's source tree (see `stack`)
LAUNCH = "__launch__"  # a variant's serve command, instead of `python -m spendgate`


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0) -> None:
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback
                if response.status < 500:
                    return
        except urllib.error.HTTPError as exc:  # the server answered: it is up
            if exc.code < 500:
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up within {timeout} s")


@dataclass
class Stack:
    sim_url: str
    gateway_url: str
    key: str
    config_path: Path
    gateways: dict[str, tuple[str, str]]  # name -> (url, key), for multi-gateway benchmarks
    pids: dict[str, int]  # name -> the gateway's process id


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (Linux ``/proc``): CPU per request is
    measured as its difference over a block, which machine noise hardly moves."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_config(sim_url: str, db: Path, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    config: dict[str, Any] = {
        "server": {"log_level": "warning"},
        "storage": {"url": f"sqlite:///{db}"},
        "providers": {
            "openai": {"kind": "openai", "base_url": f"{sim_url}/v1", "api_key_env": "SIM_KEY"},
            "anthropic": {"kind": "anthropic", "base_url": sim_url, "api_key_env": "SIM_KEY"},
        },
        "models": {
            "gpt-4o-mini": {"provider": "openai"},
            "claude-haiku-4-5": {"provider": "anthropic"},
        },
        "orgs": {"acme": {"teams": ["ml"]}},
    }
    for section, values in (extra or {}).items():
        if isinstance(values, dict):
            config[section] = {**config.get(section, {}), **values}
        else:
            config[section] = values
    return config


def _reap(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def stack(
    extra_config: dict[str, Any] | None = None,
    variants: dict[str, dict[str, Any]] | None = None,
    upstream: list[str] | None = None,
    ready_timeout: float = 20.0,
) -> Iterator[Stack]:
    """Simulator and gateway(s) as separate processes, as they would run in production.

    ``variants`` starts one gateway per entry (name -> extra config), each with its own
    database, all against the same simulator; the first is also `Stack.gateway_url`. A
    variant's ``SOURCE`` entry (not config) runs that gateway from another source tree
    (``PYTHONPATH``: another build of spendgate side by side, `benchmarks.compare`); its
    ``LAUNCH`` entry, a list, replaces ``python -m spendgate`` before ``serve`` (a profiler,
    `benchmarks.profile`). ``upstream`` replaces the simulator's command (before
    ``--port``): a cheaper fake provider, `benchmarks.fake_upstream`. ``BENCH_STDERR=1`` in
    the environment shows the gateways' stderr.
    """
    env = {**os.environ, "SIM_KEY": "sk-sim", "SPENDGATE_ADMIN_TOKEN": ADMIN}
    variants = variants or {"gateway": extra_config or {}}
    with tempfile.TemporaryDirectory(prefix="spendgate-bench-") as tmp:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(
                subprocess.Popen(
                    [
                        *(upstream or [PYTHON, "-m", "spendgate.simulator", "--no-records"]),
                        *("--port", str(sim_port)),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
            gateways: dict[str, tuple[str, str]] = {}
            pids: dict[str, int] = {"upstream": procs[0].pid}
            first_config = Path(tmp)
            for index, (name, settings) in enumerate(variants.items()):
                extra = {k: v for k, v in settings.items() if k not in (SOURCE, LAUNCH)}
                launch = list(settings.get(LAUNCH, [PYTHON, "-m", "spendgate"]))
                run_env = dict(env)
                if SOURCE in settings:
                    run_env["PYTHONPATH"] = str(settings[SOURCE])
                config_path = Path(tmp) / f"{name}.yaml"
                config = bench_config(sim_url, Path(tmp) / f"{name}.db", extra)
                config_path.write_text(yaml.safe_dump(config))
                created = subprocess.run(
                    [
                        PYTHON,
                        "-m",
                        "spendgate",
                        "keys",
                        "create",
                        "-c",
                        str(config_path),
                        "--name",
                        "bench",
                        "--team",
                        "ml",
                        "--user",
                        "bench",
                        "--json",
                    ],
                    env=run_env,
                    capture_output=True,
                    check=True,
                )
                key = orjson.loads(created.stdout)["key"]
                port = free_port()
                procs.append(
                    subprocess.Popen(
                        [
                            *launch,
                            "serve",
                            "-c",
                            str(config_path),
                            "--port",
                            str(port),
                        ],
                        env=run_env,
                        stderr=None if os.environ.get("BENCH_STDERR") else subprocess.DEVNULL,
                    )
                )
                gateways[name] = (f"http://127.0.0.1:{port}", key)
                pids[name] = procs[-1].pid
                if index == 0:
                    first_config = config_path
            wait_http(f"{sim_url}/v1/models")
            for url, _ in gateways.values():
                wait_http(f"{url}/readyz", ready_timeout)
            url, key = next(iter(gateways.values()))
            yield Stack(sim_url, url, key, first_config, gateways, pids)
        finally:
            _reap(procs)


CHAT_BODY = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello in five words."}],
    "max_tokens": 32,
}


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]


def gateway_target(s: Stack, name: str, path: str) -> Target:
    url, key = s.gateways[name]
    return Target(name, url + path, {"authorization": f"Bearer {key}"})


def targets(s: Stack, path: str) -> tuple[Target, Target]:
    direct = Target("direct", s.sim_url + path, {"authorization": "Bearer sk-sim"})
    gateway = Target("gateway", s.gateway_url + path, {"authorization": f"Bearer {s.key}"})
    return direct, gateway


async def one_request(
    session: aiohttp.ClientSession, target: Target, body: bytes, stream: bool
) -> tuple[float, float]:
    """Seconds to first body byte and to the end of the response."""
    start = time.perf_counter()
    async with session.post(target.url, data=body, headers=target.headers) as response:
        first = None
        async for _chunk in response.content.iter_any():
            if first is None:
                first = time.perf_counter()
        end = time.perf_counter()
        if response.status != 200:
            raise RuntimeError(f"{target.name}: HTTP {response.status}")
    return (first or end) - start, end - start


async def run_block(
    session: aiohttp.ClientSession,
    target: Target,
    body: dict[str, Any],
    *,
    count: int,
    concurrency: int,
    stream: bool = False,
) -> tuple[list[float], list[float], float]:
    """``count`` requests at ``concurrency``: TTFBs, totals, wall seconds."""
    payload = orjson.dumps({**body, "stream": True} if stream else body)
    ttfb: list[float] = []
    total: list[float] = []
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            first, end = await one_request(session, target, payload, stream)
            ttfb.append(first)
            total.append(end)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ttfb, total, time.perf_counter() - started


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def median(values: list[float]) -> float:
    return statistics.median(values)
