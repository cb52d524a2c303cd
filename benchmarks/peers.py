"""spendgate against its floor and its best-known peer, side by side in one run (issue 17's
targets), and what counting metrics costs (issue 15).

    python -m benchmarks.peers [--rounds 5] [--litellm /work/litellm-venv]
        [--overlay extra.yaml] [--write docs/benchmarks.md]

One simulator; every proxy a separate process on the same cores; one load generator that
alternates blocks of non-streamed chat requests between them, the order rotating each
round:

* ``direct``: the simulator itself (what "added" latency is measured from);
* ``pass-through``: a bare aiohttp proxy on uvloop, no auth, metering or policy
  (`benchmarks.passthrough`, as `shared/PEERS.md` measured it);
* ``metering``: spendgate with key auth, metering and its SQLite ledger, no budget or limit;
* ``policy``: the full policy (`benchmarks.profile.FULL_POLICY`: three nested budgets,
  three rate limits) with metrics on, plus ``--overlay`` (a YAML config merged into this
  variant only: alerts, when they exist);
* ``policy, metrics off``: the same with ``server.metrics: false`` and no overlay;
* ``litellm``: LiteLLM's proxy from the virtual environment ``--litellm`` names (installed
  outside this repository, `shared/PEERS.md`), with its master key and no database: its
  virtual keys and budgets need Prisma's query engine, which is downloaded at run time
  and cannot be here. Left out without the option.

At concurrency 1: p50 and the added p50 (median over rounds of each round's median minus
the direct call's). At concurrency 32: requests per second and the serving process's CPU
time per request (user + system from ``/proc``, its child processes included).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from benchmarks.common import (
    CHAT_BODY,
    PYTHON,
    ROOT,
    Target,
    cpu_seconds,
    free_port,
    gateway_target,
    median,
    ms,
    run_block,
    stack,
    wait_http,
)
from benchmarks.latency import machine, write
from benchmarks.profile import FULL_POLICY

LITELLM_KEY = "sk-bench-litellm"


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process and every descendant (a server may fork workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
        todo += children.get(current, [])
    return total


@dataclass
class Proxy:
    target: Target
    pid: int | None  # None: not measured (the simulator)


@contextmanager
def _process(argv: list[str], health: str, env: dict[str, str] | None = None,
             timeout: float = 20.0) -> Iterator[subprocess.Popen[bytes]]:  # fmt: skip
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_STDERR") else subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_http(health, timeout)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _litellm_config(sim_url: str) -> dict[str, Any]:
    params = {"model": "openai/gpt-4o-mini", "api_base": f"{sim_url}/v1", "api_key": "sk-sim"}
    return {
        "model_list": [{"model_name": "gpt-4o-mini", "litellm_params": params}],
        "general_settings": {"master_key": LITELLM_KEY},
        "litellm_settings": {"set_verbose": False},
    }


@contextmanager
def peers(litellm: Path | None, overlay: dict[str, Any]) -> Iterator[list[Proxy]]:
    policy = {**FULL_POLICY}
    for section, values in overlay.items():
        merged = {**policy.get(section, {}), **values} if isinstance(values, dict) else values
        policy[section] = merged
    variants = {
        "metering": {},
        "policy": policy,
        "policy, metrics off": {
            **FULL_POLICY,
            "server": {"log_level": "warning", "metrics": False},
        },
    }
    path = "/v1/chat/completions"
    with stack(variants=variants) as s, tempfile.TemporaryDirectory() as tmp:
        proxies = [
            Proxy(Target("direct", s.sim_url + path, {"authorization": "Bearer sk-sim"}), None)
        ]
        port = free_port()
        argv = [
            PYTHON,
            "-m",
            "benchmarks.passthrough",
            "--port",
            str(port),
            "--upstream",
            s.sim_url,
        ]
        with _process(argv, f"http://127.0.0.1:{port}/none") as bare:
            proxies.append(
                Proxy(Target("pass-through", f"http://127.0.0.1:{port}{path}", {}), bare.pid)
            )
            proxies += [Proxy(gateway_target(s, name, path), s.pids[name]) for name in variants]
            if litellm is None:
                yield proxies
                return
            config = Path(tmp) / "litellm.yaml"
            config.write_text(yaml.safe_dump(_litellm_config(s.sim_url)))
            port = free_port()
            argv = [str(litellm / "bin" / "litellm"), "--config", str(config), "--port", str(port)]
            env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False"}
            with _process(argv, f"http://127.0.0.1:{port}/health/liveliness", env, 180) as peer:
                target = Target("litellm", f"http://127.0.0.1:{port}{path}",
                                {"authorization": f"Bearer {LITELLM_KEY}"})  # fmt: skip
                yield [*proxies, Proxy(target, peer.pid)]


@dataclass
class Figures:
    p50: list[float] = field(default_factory=list)  # per round, seconds (concurrency 1)
    added: list[float] = field(default_factory=list)
    rps: list[float] = field(default_factory=list)  # per round (concurrency 32)
    cpu: list[float] = field(default_factory=list)  # seconds per request (concurrency 32)


async def measure(
    proxies: list[Proxy], rounds: int, count1: int, count32: int
) -> dict[str, Figures]:
    figures = {p.target.name: Figures() for p in proxies}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for proxy in proxies:  # warm-up: connections, caches
            await run_block(session, proxy.target, CHAT_BODY, count=100, concurrency=8)
        for round_no in range(rounds):
            shift = round_no % len(proxies)
            order = proxies[shift:] + proxies[:shift]
            medians = {}
            for proxy in order:
                _, total, _ = await run_block(
                    session, proxy.target, CHAT_BODY, count=count1, concurrency=1
                )
                medians[proxy.target.name] = median(total)
            for name, value in medians.items():
                figures[name].p50.append(value)
                figures[name].added.append(value - medians["direct"])
            for proxy in order:
                before = tree_cpu(proxy.pid) if proxy.pid else 0.0
                _, _, wall = await run_block(
                    session, proxy.target, CHAT_BODY, count=count32, concurrency=32
                )
                figures[proxy.target.name].rps.append(count32 / wall)
                if proxy.pid:
                    figures[proxy.target.name].cpu.append((tree_cpu(proxy.pid) - before) / count32)
            print(f"round {round_no + 1}/{rounds} done", file=sys.stderr, flush=True)
    return figures


def report(figures: dict[str, Figures], overlaid: bool = False) -> str:
    lines = [
        "| variant | p50 ms, c=1 | added p50 ms, c=1 | req/s, c=32 | CPU µs per request, c=32 |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, f in figures.items():
        cpu = f"{median(f.cpu) * 1e6:,.0f}" if f.cpu else "—"
        added = f"**{ms(median(f.added))}**" if name != "direct" else "—"
        lines.append(f"| {name} | {ms(median(f.p50))} | {added} | {median(f.rps):,.0f} | {cpu} |")
    bare, policy, off = figures["pass-through"], figures["policy"], figures["policy, metrics off"]
    lines += [
        "",
        "| target (full policy against the pass-through) | measured | target |",
        "|---|---:|---:|",
        f"| added p50 at c=1 | {median(policy.added) / median(bare.added):.2f}x | ≤ 2x |",
        f"| throughput at c=32 | {median(policy.rps) / median(bare.rps):.2f}x | ≥ 0.5x |",
        f"| CPU per request at c=32 | {median(policy.cpu) / median(bare.cpu):.2f}x | ≤ 2.5x |",
        "",
        f"| metrics{' and overlay' if overlaid else ''} on against off (full policy; median of"
        " per-round differences) | change |",
        "|---|---:|",
        f"| p50 at c=1 | {_diff(policy.p50, off.p50, 1e3):+.3f} ms |",
        f"| req/s at c=32 | {_diff(policy.rps, off.rps, 1):+.0f} |",
        f"| CPU per request at c=32 | {_diff(policy.cpu, off.cpu, 1e6):+.1f} µs |",
    ]
    return "\n".join(lines)


def _diff(on: list[float], off: list[float], scale: float) -> float:
    return median([(a - b) * scale for a, b in zip(on, off, strict=True)])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--count1", type=int, default=300, help="requests per block at c=1")
    parser.add_argument("--count32", type=int, default=1500, help="requests per block at c=32")
    parser.add_argument("--litellm", type=Path, default=None, help="LiteLLM's virtualenv")
    parser.add_argument("--overlay", type=Path, default=None, help="YAML merged into 'policy'")
    parser.add_argument("--write", type=Path, default=None, help="update this markdown file")
    parser.add_argument("--section", default="peers", help="the marked section to replace")
    args = parser.parse_args()
    overlay = yaml.safe_load(args.overlay.read_text()) if args.overlay else {}
    with peers(args.litellm, overlay or {}) as proxies:
        figures = asyncio.run(measure(proxies, args.rounds, args.count1, args.count32))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = os.getloadavg()[0]
    command = f"python -m benchmarks.peers --rounds {args.rounds}"
    command += " --litellm <its venv>" if args.litellm else ""
    command += f" --overlay {args.overlay.name}" if args.overlay else ""
    content = (
        f"Measured {stamp} on {machine()}, load average {load:.1f} at the end (a machine"
        f" shared with other work), with `{command}` ({args.count1} requests per block at"
        f" concurrency 1, {args.count32} at 32; medians over rounds).\n\n"
        + report(figures, bool(overlay))
    )
    print(content)
    if args.write:
        path = ROOT / args.write if not args.write.is_absolute() else args.write
        write(path, args.section, content)


if __name__ == "__main__":
    main()
