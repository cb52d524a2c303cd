"""Two workers against one, measuring the gateway and not its harness: a load generator in
C (wrk), a fake upstream that costs next to nothing, Redis and PostgreSQL servers of the
run's own, and every process's CPU per request, so the reader sees where the cores went.

    apt-get install -y wrk          # once; benchmarks only (not `make setup`, not CI)
    python -m benchmarks.scaleout [--rounds 3] [--seconds 5] [--concurrency 32,256]
        [--backends redis-pg,sqlite] [--pin-harness CPUS] [--write docs/benchmarks.md]

Started once, all at the same time: `benchmarks.fake_upstream` (an asyncio Protocol on
uvloop returning one fixed chat completion with its usage); a throwaway ``redis-server``
(append-only, ``appendfsync everysec``) and a throwaway PostgreSQL 15 cluster (initdb in a
temporary folder, default durability: ``fsync`` and ``synchronous_commit`` on), both on
free ports, so that every CPU second they spend is this run's (the machine's shared
servers also serve other work); and one gateway per backend and worker count (``serve
--workers N``), each with three nested dollar budgets (key, team, org) and stores of its
own. ``wrk`` (one thread, keep-alive, ``--latency``) drives blocks of ``--seconds``
against the upstream directly ("direct") and against each gateway in turn, the order
rotated every round; a block that meets any non-2xx answer stops the run.

For each block, the CPU time (user + system, from ``/proc``) of each process group over
the block divided by the requests it completed: the gateway (supervisor and workers),
Redis, PostgreSQL (postmaster and every backend), the fake upstream, wrk (its rusage), and
"rest", whatever else the machine ran meanwhile (``/proc/stat`` busy time minus all of the
above: other people's work on a shared machine). Each figure is the median over rounds.

The bound. With ``C`` cores and ``s`` ms of CPU per request summed over every process a
request costs, no gateway configuration serves more than ``C / s`` requests a second on
this machine; and ``N`` workers serve at most ``N / g`` (``g``: one worker's CPU per
request). So on 2 cores, two workers can reach ``min(2/g, 2/s)`` and one worker
``min(1/g, 2/s)``: the ratio two workers can show is at most ``2 g / s`` whenever the
harness and the stores cost anything (``s > g``). The table reports that bound beside
the measured ratio.

``--pin-harness 0`` pins wrk and the fake upstream to CPU 0 (``sched_setaffinity``);
by default the kernel places every process.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.budgets import NESTED
from benchmarks.common import PYTHON, ROOT, Stack, cpu_seconds, median, stack
from benchmarks.latency import machine, write
from benchmarks.workers import wait_for_every_worker

BODY = (
    '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}],'
    '"max_tokens":32}'
)
PG_BIN = Path(os.environ.get("PG_BIN", "/usr/lib/postgresql/15/bin"))
BACKEND_NAMES = {"sqlite": "SQLite", "redis-pg": "Redis + PostgreSQL"}
GROUPS = ("gateway", "redis", "postgres", "upstream", "wrk", "rest")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def children_of(pid: int) -> list[int]:
    """``pid`` and its direct children (a supervisor's workers, a postmaster's backends)."""
    found = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                found.append(int(entry))
    return found


def group_cpu(pid: int) -> float:
    total = 0.0
    for member in children_of(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue  # a backend that just ended: its time is lost to the figure (small)
    return total


def busy_seconds() -> float:
    """Busy CPU seconds of the whole machine (every core) since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


@contextmanager
def own_redis(where: Path) -> Iterator[tuple[str, int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1", "--dir", str(where)),
            *("--save", "", "--appendonly", "yes", "--appendfsync", "everysec"),
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", process.pid
    finally:
        process.kill()
        process.wait()


@contextmanager
def own_postgres() -> Iterator[tuple[str, int]]:
    """A PostgreSQL cluster of the run's own (as ``postgres`` when run as root)."""
    where = Path(tempfile.mkdtemp(prefix="sg-scaleout-pg-"))
    data, port = where / "pgdata", free_port()
    as_root = os.geteuid() == 0
    if as_root:
        shutil.chown(where, "postgres", "postgres")

    def run(*args: str) -> None:
        command = [str(PG_BIN / args[0]), *args[1:]]
        if as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    run("initdb", "-D", str(data), "-U", "root", "--auth=trust", "-E", "UTF8")
    options = f"-p {port} -k {where} -c listen_addresses=127.0.0.1 -c max_connections=200"
    run("pg_ctl", "start", "-w", "-D", str(data), "-l", str(where / "pg.log"), "-o", options)
    try:
        pid = int((data / "postmaster.pid").read_text().split("\n", 1)[0])
        yield f"postgresql://root@127.0.0.1:{port}", pid
    finally:
        try:
            run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(data))
        finally:
            shutil.rmtree(where, ignore_errors=True)


@dataclass
class Block:
    rps: float
    p50_ms: float
    requests: int
    cpu_ms: dict[str, float] = field(default_factory=dict)  # group -> ms per request
    idle_ms_s: dict[str, float] = field(default_factory=dict)  # idle gateway -> ms CPU / s


@dataclass
class Harness:
    s: Stack
    pids: dict[str, int]  # group -> pid (redis, postgres absent on SQLite)
    pin: set[int] | None
    script: Path
    idle: dict[str, int]  # the gateways not under load: their background work per second


LATENCY = re.compile(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
TOTAL = re.compile(r"(\d+) requests in ([\d.]+)(us|ms|s|m)")
UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def wrk_block(h: Harness, url: str, concurrency: int, seconds: float) -> Block:
    groups = {name: pid for name, pid in h.pids.items() if name != "wrk"}
    before = {name: group_cpu(pid) for name, pid in groups.items()}
    idle_before = {name: group_cpu(pid) for name, pid in h.idle.items()}
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = busy_seconds()
    command = [
        *("wrk", "-t1", f"-c{concurrency}", f"-d{round(seconds)}s", "--latency"),
        *("--timeout", "30s", "-s", str(h.script), url),
    ]

    def pin() -> None:
        if h.pin:
            os.sched_setaffinity(0, h.pin)

    done = subprocess.run(command, capture_output=True, text=True, check=True, preexec_fn=pin)
    busy = busy_seconds() - busy
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = done.stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{url}: not every answer was a 2xx:\n{out}")
    total = TOTAL.search(out)
    latency = LATENCY.search(out)
    if total is None or latency is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    requests = int(total.group(1))
    if requests == 0:
        raise RuntimeError(f"{url}: no request completed:\n{out}")
    wall = float(total.group(2)) * UNITS[total.group(3)] / 1000
    used = {name: group_cpu(pid) - before[name] for name, pid in groups.items()}
    used["wrk"] = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    idle = {name: group_cpu(pid) - idle_before[name] for name, pid in h.idle.items()}
    used["rest"] = max(0.0, busy - sum(used.values()) - sum(idle.values()))
    return Block(
        rps=requests / wall,
        p50_ms=float(latency.group(1)) * UNITS[latency.group(2)],
        requests=requests,
        cpu_ms={name: seconds_used * 1000 / requests for name, seconds_used in used.items()},
        idle_ms_s={name: seconds_used * 1000 / wall for name, seconds_used in idle.items()},
    )


def lua_script(where: Path, key: str) -> Path:
    path = where / f"post-{uuid.uuid4().hex[:8]}.lua"
    path.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["Authorization"] = "Bearer {key}"\n'
    )
    return path


def pin_process(pid: int, cpus: set[int] | None) -> None:
    if cpus:
        for member in children_of(pid):
            os.sched_setaffinity(member, cpus)


def measure(
    s: Stack,
    names: list[str],
    stores: dict[str, int],
    where: Path,
    concurrency: int,
    rounds: int,
    seconds: float,
    pin: set[int] | None,
) -> dict[str, list[Block]]:
    targets = ["direct", *names]
    found: dict[str, list[Block]] = {name: [] for name in targets}
    scripts = {"direct": lua_script(where, "sk-sim")}
    scripts.update({name: lua_script(where, s.gateways[name][1]) for name in names})
    urls = {"direct": s.sim_url + "/v1/chat/completions"}
    urls.update({name: s.gateways[name][0] + "/v1/chat/completions" for name in names})
    for name in targets:  # warm up: connections, caches, every worker
        pids = {"upstream": s.pids["upstream"]}
        if name != "direct":
            pids.update(stores, gateway=s.pids[name])
        idle = {other: s.pids[other] for other in s.gateways if other != name}
        wrk_block(Harness(s, pids, pin, scripts[name], idle), urls[name], concurrency, 3)
    for round_no in range(rounds):
        shift = round_no % len(targets)
        for name in targets[shift:] + targets[:shift]:
            pids = {"upstream": s.pids["upstream"]}
            if name != "direct":
                pids.update(stores, gateway=s.pids[name])
            idle = {other: s.pids[other] for other in s.gateways if other != name}
            block = wrk_block(
                Harness(s, pids, pin, scripts[name], idle), urls[name], concurrency, seconds
            )
            found[name].append(block)
            print(
                f"  c={concurrency} round {round_no + 1} {name}: {block.rps:,.0f} req/s", flush=True
            )
    return found


def cell(blocks: list[Block], group: str) -> str:
    values = [b.cpu_ms.get(group) for b in blocks]
    present = [v for v in values if v is not None]
    return f"{median(present):.3f}" if present else ""


def table(found: dict[int, dict[str, list[Block]]], names: list[str], cores: int) -> list[str]:
    lines = [
        "| concurrency | target | req/s | vs 1 worker | p50 ms | "
        + " | ".join(f"CPU ms/req: {g}" for g in GROUPS)
        + " | all | cores: this stack | cores: rest | bound 2w/1w | idle: CPU ms/s |",
        "|---:|---|---:|---:|---:|" + "---:|" * (len(GROUPS) + 5),
    ]
    for concurrency, per in found.items():
        one = median([b.rps for b in per[names[0]]])
        for name in ["direct", *names]:
            blocks = per[name]
            rps = median([b.rps for b in blocks])
            ours = [g for g in GROUPS if g != "rest"]
            everything = median([sum(b.cpu_ms.get(g, 0.0) for g in ours) for b in blocks])
            stack_cores = median([sum(b.cpu_ms.get(g, 0.0) for g in ours) * b.rps for b in blocks])
            rest_cores = median([b.cpu_ms["rest"] * b.rps for b in blocks])
            ratio = f"{rps / one:.2f}x" if name != "direct" else ""
            bound = idle = ""
            if name != "direct":
                every = [b for bs in per.values() for b in bs]
                idle_rates = [b.idle_ms_s[name] for b in every if name in b.idle_ms_s]
                idle = f"{median(idle_rates):.1f}" if idle_rates else ""
                gateway = median([b.cpu_ms["gateway"] for b in blocks])
                bound = f"{min(2.0, 2 * gateway / everything) if cores >= 2 else 1.0:.2f}x"
            lines.append(
                f"| {concurrency} | {name} | {rps:,.0f} | {ratio} | "
                f"{median([b.p50_ms for b in blocks]):.2f} | "
                + " | ".join(cell(blocks, g) for g in GROUPS)
                + f" | {everything:.3f} | {stack_cores / 1000:.2f} | {rest_cores / 1000:.2f}"
                + f" | {bound} | {idle} |"
            )
    return lines


def run(
    rounds: int, seconds: float, concurrencies: list[int], backends: list[str], pin: set[int] | None
) -> str:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk (benchmarks only)")
    with tempfile.TemporaryDirectory(prefix="sg-scaleout-") as tmp:
        where = Path(tmp)
        (where / "redis").mkdir()
        with (
            own_redis(where / "redis") as (redis_url, redis_pid),
            own_postgres() as (pg_url, pg_pid),
        ):
            variants: dict[str, dict[str, Any]] = {}
            groups: dict[str, list[str]] = {}
            for backend in backends:
                for workers in (1, 2):
                    name = f"{BACKEND_NAMES[backend]} {workers} worker" + "s" * (workers > 1)
                    extra: dict[str, Any] = {**NESTED, "server": {"workers": workers}}
                    if backend == "redis-pg":
                        database = f"sgscale_{uuid.uuid4().hex[:8]}"
                        subprocess.run(
                            [str(PG_BIN / "createdb"), "-h", "127.0.0.1", "-p",
                             pg_url.rsplit(":", 1)[1], "-U", "root", database],
                            check=True, capture_output=True,
                        )  # fmt: skip
                        extra["storage"] = {
                            "url": f"{pg_url}/{database}",
                            "counters_url": f"{redis_url}?prefix=sg{uuid.uuid4().hex[:8]}",
                            "postgres": {"pool_min_size": 1, "pool_max_size": 8},
                        }
                    variants[name] = extra
                    groups.setdefault(backend, []).append(name)
            upstream = [PYTHON, "-m", "benchmarks.fake_upstream"]
            with stack(variants=variants, upstream=upstream) as s:
                for name, extra in variants.items():
                    wait_for_every_worker(s.gateways[name][0], extra["server"]["workers"])
                pin_process(s.pids["upstream"], pin)
                lines: list[str] = []
                for backend, names in groups.items():
                    stores = {"redis": redis_pid, "postgres": pg_pid} if backend != "sqlite" else {}
                    found = {
                        c: measure(s, names, stores, where, c, rounds, seconds, pin)
                        for c in concurrencies
                    }
                    lines += ["", f"{BACKEND_NAMES[backend]}:", ""]
                    lines += table(found, names, os.cpu_count() or 1)
                return "\n".join(lines).strip()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="one wrk block's length")
    parser.add_argument("--concurrency", default="32,256")
    parser.add_argument("--backends", default="redis-pg", help="redis-pg, sqlite (comma separated)")
    parser.add_argument("--pin-harness", default="", help="CPUs for wrk and the fake upstream")
    parser.add_argument("--write", type=Path, default=None, help="update this markdown file")
    args = parser.parse_args()
    pin = {int(c) for c in args.pin_harness.split(",") if c} or None
    load_before = os.getloadavg()[0]
    result = run(
        args.rounds,
        args.seconds,
        [int(c) for c in args.concurrency.split(",")],
        [b for b in args.backends.split(",") if b],
        pin,
    )
    load_after = os.getloadavg()[0]
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = (
        f"python -m benchmarks.scaleout --rounds {args.rounds} --seconds {args.seconds:g} "
        f"--concurrency {args.concurrency} --backends {args.backends}"
        + (f" --pin-harness {args.pin_harness}" if pin else "")
    )
    content = (
        f"Measured {stamp} on {machine()}, load average {load_before:.1f} before and "
        f"{load_after:.1f} after, with `{command}` (wrk 4.1, Redis 7 and PostgreSQL 15 of the "
        "run's own; medians over rounds).\n\n" + result
    )
    print(content)
    if args.write:
        write(
            ROOT / args.write if not args.write.is_absolute() else args.write, "scaleout", content
        )


if __name__ == "__main__":
    main()
