"""Budgets at organisation scale: throughput and latency with 10, 10,000 and 100,000
listed budgets and 10,000 active keys; start-up and ``check-config`` with them; idle RSS.

    python -m benchmarks.many_budgets [--rounds 3] [--keys 10000] [--csv]
                                      [--baseline SRC [--baseline-size N]]
                                      [--write docs/benchmarks.md]

One simulator and one gateway per variant, side by side: "none" (no budget), and one
per size in `SIZES`, each listing that many per-user budgets one by one (``scope: user,
match: user<i>``, different limits: the common case of an organisation). Every variant
has the same 10,000 keys (users ``user<i mod size>``), so every request of every budgeted
variant reserves and settles exactly one counter, whatever the size: the variants differ
only in how many budgets are listed. The load generator sends each request with the next
key in turn, so a key comes back only after 10,000 others (more than the gateway's
applies-cache holds). ``--csv`` adds the largest size again with its budgets in a
``budgets_file`` (CSV). ``--baseline SRC`` adds a variant of ``--baseline-size`` budgets
(10,000) run from another source tree (``PYTHONPATH=SRC``, e.g. ``git archive <commit>
src``), for before/after.

Per round (the variants' order rotates): a block at concurrency 32 (requests per second)
and a block at concurrency 1 (p50, and "added": minus the simulator called directly in
the same round), and the gateway's CPU time per request over the concurrency-32 block
(from ``/proc``: on a shared machine it moves far less than throughput). Reported:
medians over rounds; "vs 10 budgets" is the median of the per-round ratios. Start-up:
from spawning ``serve`` to its first ``/readyz`` answer, and the CPU it used by then;
``check-config``: median wall time of runs alternating between sizes. RSS: each gateway's
``VmRSS`` after start (idle) and after the rounds (idle again).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import yaml

from benchmarks.common import (
    ADMIN,
    CHAT_BODY,
    PYTHON,
    ROOT,
    bench_config,
    cpu_seconds,
    free_port,
    median,
    wait_http,
)
from benchmarks.latency import machine, write
from spendgate.clock import SystemClock
from spendgate.config.loader import load_config
from spendgate.services.keys import KeyService, KeySpec
from spendgate.storage.open import open_storage

SIZES = (10, 10_000, 100_000)


@dataclass
class Variant:
    name: str
    budgets: int  # listed budgets; 0: none
    source: Path | None = None  # another source tree (--baseline)
    in_csv: bool = False  # the budgets in a ``budgets_file`` (CSV), not under ``budgets:``
    url: str = ""
    secrets: list[str] = field(default_factory=list)
    turns: Iterator[int] = field(default_factory=itertools.count)  # which key is next
    pid: int = 0
    start_s: float = 0.0
    start_cpu_s: float = 0.0
    rss_start_mb: float = 0.0
    config: Path = Path()


def listed(count: int) -> list[dict[str, Any]]:
    return [
        {
            "name": f"user-{i}",
            "scope": "user",
            "match": f"user{i}",
            "limit_usd": f"{1000 + i % 97}",
            "period": "monthly",
        }
        for i in range(count)
    ]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def issue_keys(config_path: Path, keys: int, users: int) -> list[str]:
    """``keys`` keys for users ``user<i mod users>``, straight into the variant's database."""
    config = load_config(config_path)
    storage = open_storage(config.storage.url)
    await storage.open()
    try:
        service = KeyService(storage, config, SystemClock())
        issued = [
            await service.create(KeySpec(name=f"k{i}", user=f"user{i % users}", team="ml"))
            for i in range(keys)
        ]
    finally:
        await storage.close()
    return [key.secret for key in issued]


def write_csv(path: Path, budgets: list[dict[str, Any]]) -> None:
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(budgets[0]))
        writer.writeheader()
        writer.writerows(budgets)


def start(variant: Variant, sim_url: str, tmp: Path, keys: int) -> subprocess.Popen[bytes]:
    extra: dict[str, Any] = {"budgets": listed(variant.budgets)} if variant.budgets else {}
    if variant.in_csv:
        write_csv(tmp / f"{variant.name}.csv", extra.pop("budgets"))
        extra["budgets_file"] = f"{variant.name}.csv"
    config = bench_config(sim_url, tmp / f"{variant.name}.db", extra)
    variant.config = tmp / f"{variant.name}.yaml"
    variant.config.write_text(yaml.safe_dump(config, sort_keys=False))
    variant.secrets = asyncio.run(issue_keys(variant.config, keys, variant.budgets or keys))
    env = {**os.environ, "SIM_KEY": "sk-sim", "SPENDGATE_ADMIN_TOKEN": ADMIN}
    if variant.source is not None:
        env["PYTHONPATH"] = str(variant.source)
    port = free_port()
    variant.url = f"http://127.0.0.1:{port}"
    began = time.perf_counter()
    command = [PYTHON, "-m", "spendgate", "serve", "-c", str(variant.config), "--port", str(port)]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    wait_http(f"{variant.url}/readyz", timeout=300)
    variant.start_s = time.perf_counter() - began
    variant.start_cpu_s = cpu_seconds(proc.pid)
    variant.pid = proc.pid
    time.sleep(1)
    variant.rss_start_mb = rss_mb(proc.pid)
    return proc


async def block(
    session: aiohttp.ClientSession,
    url: str,
    secrets: list[str],
    turns: Iterator[int],
    count: int,
    concurrency: int,
) -> tuple[list[float], float]:
    """``count`` requests at ``concurrency``, each with the next key: latencies, wall s."""
    payload = orjson.dumps(CHAT_BODY)
    latencies: list[float] = []
    sent = 0

    async def worker() -> None:
        nonlocal sent
        while sent < count:
            secret = secrets[next(turns) % len(secrets)]
            sent += 1
            headers = {"authorization": f"Bearer {secret}"}
            began = time.perf_counter()
            async with session.post(url, data=payload, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url}: HTTP {response.status}")
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, time.perf_counter() - began


async def rounds(
    variants: list[Variant], sim_url: str, rounds: int, busy: int, calm: int
) -> dict[str, dict[str, list[float]]]:
    found: dict[str, dict[str, list[float]]] = {
        v.name: {"rps": [], "cpu": [], "p50": [], "added": [], "ratio": []} for v in variants
    }
    path = "/v1/chat/completions"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        for variant in variants:  # warm-up: every key once (its counter exists from then on)
            keys = variant.secrets
            await block(session, variant.url + path, keys, variant.turns, len(keys), 32)
        for round_no in range(rounds):
            shift = round_no % len(variants)
            direct, _ = await block(session, sim_url + path, ["sk-sim"], itertools.count(), calm, 1)
            for variant in variants[shift:] + variants[:shift]:
                url, keys, turns = variant.url + path, variant.secrets, variant.turns
                cpu = cpu_seconds(variant.pid)
                _, wall = await block(session, url, keys, turns, busy, 32)
                found[variant.name]["cpu"].append((cpu_seconds(variant.pid) - cpu) / busy)
                found[variant.name]["rps"].append(busy / wall)
                latencies, _ = await block(session, url, keys, turns, calm, 1)
                found[variant.name]["p50"].append(median(latencies))
                found[variant.name]["added"].append(median(latencies) - median(direct))
            reference = found[variants[1].name]["rps"][-1]  # the 10-budget variant
            for variant in variants:
                found[variant.name]["ratio"].append(found[variant.name]["rps"][-1] / reference)
            print(f"round {round_no + 1}/{rounds} done", flush=True)
    return found


def check_config_times(variants: list[Variant], runs: int) -> dict[str, list[float]]:
    env = {**os.environ, "SIM_KEY": "sk-sim"}
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(runs):
        for variant in variants:
            if variant.source is not None:
                env["PYTHONPATH"] = str(variant.source)
            else:
                env.pop("PYTHONPATH", None)
            command = [PYTHON, "-m", "spendgate", "check-config", "-c", str(variant.config)]
            began = time.perf_counter()
            subprocess.run(command, env=env, capture_output=True, check=True)
            times[variant.name].append(time.perf_counter() - began)
    return times


def stages(config_path: Path, runs: int) -> str:
    """Where loading a config goes, in CPU seconds (medians of ``runs``, in this process,
    without the cyclic collector, as the CLI's start runs): the YAML (and the CSV of a
    ``budgets_file``, validated by columns as it is read), the validation of the rest, the
    budget book (budgets filed in their index, each built on first use)."""
    import gc

    from spendgate.config.budget_file import read_budget_specs
    from spendgate.config.build import build_budget_book
    from spendgate.config.loader import parse_config
    from spendgate.config.yaml_text import parse_yaml as _parse_yaml

    text = config_path.read_text()
    spent: dict[str, list[float]] = {"YAML": [], "CSV": [], "validation": [], "book": []}
    gc.disable()
    try:
        for _ in range(runs):
            began = time.process_time()
            data = _parse_yaml(str(config_path), text)
            parsed = time.process_time()
            more: tuple[Any, ...] = ()
            if "budgets_file" in data:  # read and validated by columns, as the loader does
                more = tuple(read_budget_specs(config_path.parent / data["budgets_file"]) or ())
            read = time.process_time()
            config = parse_config(data, str(config_path), more)
            validated = time.process_time()
            build_budget_book(config)
            built = time.process_time()
            spent["YAML"].append(parsed - began)
            spent["CSV"].append(read - parsed)
            spent["validation"].append(validated - read)
            spent["book"].append(built - validated)
    finally:
        gc.enable()
    if "budgets_file" in text:  # the stages this config has
        del spent["YAML"]  # a few lines of YAML
    else:
        del spent["CSV"]
    return ", ".join(f"{name} {median(values):.2f} s" for name, values in spent.items())


def table(
    variants: list[Variant],
    found: dict[str, dict[str, list[float]]],
    checks: dict[str, list[float]],
    rss_after: dict[str, float],
) -> str:
    lines = [
        "| variant | req/s at c=32 | vs 10 budgets | CPU ms per request | p50 ms at c=1 | "
        "added p50 ms | "
        "start-up s (CPU s) | check-config s | RSS idle MB (start) | RSS idle MB (after) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for v in variants:
        r = found[v.name]
        rps = median(r["rps"])
        lines.append(
            f"| {v.name} | {rps:,.0f} | {(median(r['ratio']) - 1) * 100:+.1f}% | "
            f"{median(r['cpu']) * 1000:.2f} | "
            f"{median(r['p50']) * 1000:.2f} | {median(r['added']) * 1000:.2f} | "
            f"{v.start_s:.2f} ({v.start_cpu_s:.2f}) | {median(checks[v.name]):.2f} | "
            f"{v.rss_start_mb:.1f} | "
            f"{rss_after[v.name]:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--busy", type=int, default=1000, help="requests per c=32 block")
    parser.add_argument("--calm", type=int, default=200, help="requests per c=1 block")
    parser.add_argument("--checks", type=int, default=3, help="check-config runs per variant")
    parser.add_argument("--baseline", type=Path, default=None)
    parser.add_argument("--baseline-size", type=int, default=10_000, help="its listed budgets")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)), help="listed budgets")
    parser.add_argument("--write", type=Path, default=None)
    parser.add_argument(
        "--csv", action="store_true", help="also the largest size in a budgets_file (CSV)"
    )
    args = parser.parse_args()
    variants = [Variant("no budget", 0)]
    sizes = [int(size) for size in args.sizes.split(",")]
    variants += [Variant(f"{size:,} budgets", size) for size in sizes]
    if args.csv:
        most = max(sizes)
        variants.append(Variant(f"{most:,} budgets (CSV)", most, in_csv=True))
    if args.baseline is not None:
        size = args.baseline_size
        variants.append(Variant(f"{size:,} budgets (baseline)", size, args.baseline))
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="spendgate-bench-") as folder:
        tmp = Path(folder)
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        try:
            sim = [PYTHON, "-m", "spendgate.simulator", "--port", str(sim_port), "--no-records"]
            procs.append(subprocess.Popen(sim, stdout=subprocess.DEVNULL))
            wait_http(f"{sim_url}/v1/models")
            for variant in variants:
                procs.append(start(variant, sim_url, tmp, args.keys))
                print(f"{variant.name}: up in {variant.start_s:.2f} s", flush=True)
            found = asyncio.run(rounds(variants, sim_url, args.rounds, args.busy, args.calm))
            time.sleep(1)
            rss_after = {v.name: rss_mb(v.pid) for v in variants}
            checks = check_config_times(variants, args.checks)
            ours = [v for v in variants if v.source is None]
            largest = max(ours, key=lambda v: (v.budgets, -v.in_csv))
            where = f"{largest.name}, CPU: " + stages(largest.config, args.checks)
            if args.csv:
                in_csv = next(v for v in variants if v.in_csv)
                where += f"; {in_csv.name}: " + stages(in_csv.config, args.checks)
        finally:
            for proc in reversed(procs):
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)
    result = table(variants, found, checks, rss_after)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m benchmarks.many_budgets", *sys.argv[1:]])
    content = (
        f"Measured {stamp} on {machine()}, load average {os.getloadavg()[0]:.1f} at the end, "
        f"with `{command}` ({args.keys:,} keys, {args.rounds} rounds of {args.busy} requests"
        f" at concurrency 32 and {args.calm} at concurrency 1 per variant; medians over"
        " rounds).\n\n" + result + "\n\nLoading the config in-process, " + where
    )
    print(content)
    if args.write:
        target = ROOT / args.write if not args.write.is_absolute() else args.write
        write(target, "many-budgets", content)


if __name__ == "__main__":
    main()
