"""What lies between a request and its answer at concurrency 1, in real time: the SQLite
gateway with the full policy (three nested budgets, three rate limits) while one
keep-alive connection sends non-streamed chat back to back, its system calls recorded
through the kernel's tracepoints (``perf record -e syscalls:...``), which cost a few
microseconds a call where ``strace`` (a ptrace stop per call) costs tens and reorders
the race this measures: whether the previous request's settlement commits before the
next request arrives, or on its path.

    python -m benchmarks.c1_path [--seconds 4] [--baseline /tmp/main/src]

Printed per build: the median phases of a request (read, reservation commit, upstream,
answer, settlement commit) and how many settlements committed after the next request
had been read. Needs ``perf`` and the right to trace (root, or perf_event_paranoid <= 1).
A commit is found by the ``newfstatat`` that starts it (the writer's file check) and
the WAL frames it writes (``pwrite64`` of a page: a reservation writes 2, a settlement 9).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import re
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.common import SOURCE, Target, gateway_target, stack
from benchmarks.profile import FULL_POLICY
from benchmarks.syscalls import _load

EVENTS = (
    "syscalls:sys_enter_read",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_newfstatat",
    "syscalls:sys_exit_fcntl",
    "syscalls:sys_enter_pwrite64",
)
_LINE = re.compile(r"\]\s+([\d.]+):\s+syscalls:(\w+):(.*)")
_FD = re.compile(r"fd: 0x([0-9a-f]+)")
_COUNT = re.compile(r"count: 0x([0-9a-f]+)")
SETTLEMENT_FRAMES = 5  # a commit writing more pages than a reservation's


@dataclass
class _Commit:
    start: float
    end: float
    frames: int = 0


@dataclass
class _Phases:
    reading: list[float] = field(default_factory=list)  # client read -> reservation commit
    reserving: list[float] = field(default_factory=list)  # the reservation's commit
    sending: list[float] = field(default_factory=list)  # its end -> the upstream write
    upstream: list[float] = field(default_factory=list)  # upstream write -> its read
    answering: list[float] = field(default_factory=list)  # upstream read -> client write
    settling: list[float] = field(default_factory=list)  # a settlement's commit
    on_path: int = 0  # settlements that committed after the next request was read
    off_path: int = 0


def _events(text: str) -> list[tuple[float, str, int | None, int | None]]:
    found = []
    for line in text.splitlines():
        match = _LINE.search(line)
        if match:
            fd, count = _FD.search(match.group(3)), _COUNT.search(match.group(3))
            found.append(
                (
                    float(match.group(1)),
                    match.group(2),
                    int(fd.group(1), 16) if fd else None,
                    int(count.group(1), 16) if count else None,
                )
            )
    return found


def _commits(events: list[tuple[float, str, int | None, int | None]]) -> list[_Commit]:
    commits: list[_Commit] = []
    current: _Commit | None = None
    for t, name, _, count in events:
        if name == "sys_enter_newfstatat":
            current = _Commit(t, t)
            commits.append(current)
        elif current is not None and name in ("sys_enter_pwrite64", "sys_exit_fcntl"):
            current.end = t
            current.frames += name == "sys_enter_pwrite64" and count == 4096
        elif name in ("sys_enter_read", "sys_enter_write"):
            current = None
    return commits


def _client_socket(
    events: list[tuple[float, str, int | None, int | None]], commits: list[_Commit]
) -> int | None:
    """The descriptor read last before most reservations: the client's connection."""
    reads = [(t, fd) for t, name, fd, _ in events if name == "sys_enter_read"]
    times = [t for t, _ in reads]
    before = Counter(
        reads[i][1]
        for c in commits
        if 0 < c.frames < SETTLEMENT_FRAMES and (i := bisect.bisect(times, c.start) - 1) >= 0
    )
    return before.most_common(1)[0][0] if before else None


def phases(text: str) -> _Phases:
    """The phases of each request, from ``perf script``'s lines."""
    events = _events(text)
    commits = _commits(events)
    starts = {c.start: c for c in commits}
    client = _client_socket(events, commits)
    out = _Phases()
    marks: list[tuple[float, str]] = []
    request: dict[str, float] = {}
    for t, name, fd, _ in events:
        if name == "sys_enter_read" and fd == client:
            marks.append((t, "read"))
            request = {"read": t}
        elif name == "sys_enter_newfstatat" and "read" in request and "reserved" not in request:
            commit = starts[t]
            if commit.frames < SETTLEMENT_FRAMES:  # (else: the previous one's settlement)
                request |= {"reserving": t, "reserved": commit.end}
        elif name == "sys_enter_write" and fd != client and "reserved" in request:
            request.setdefault("sent", t)
        elif name == "sys_enter_read" and fd != client and "sent" in request:
            request.setdefault("back", t)
        elif name == "sys_enter_write" and fd == client and "back" in request:
            marks.append((t, "answer"))
            out.reading.append(request["reserving"] - request["read"])
            out.reserving.append(request["reserved"] - request["reserving"])
            out.sending.append(request["sent"] - request["reserved"])
            out.upstream.append(request["back"] - request["sent"])
            out.answering.append(t - request["back"])
            request = {}
    times = [t for t, _ in marks]
    for commit in commits:
        if commit.frames < SETTLEMENT_FRAMES:
            continue
        out.settling.append(commit.end - commit.start)
        before = bisect.bisect(times, commit.start) - 1
        if before >= 0 and marks[before][1] == "read":
            out.on_path += 1
        else:
            out.off_path += 1
    return out


def _table(name: str, found: _Phases, requests: int) -> str:
    def us(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e6:.0f}" if values else "-"

    rows = [
        ("read -> reservation commit starts", found.reading),
        ("reservation commit", found.reserving),
        ("-> upstream write", found.sending),
        ("upstream", found.upstream),
        ("upstream answer -> client answer", found.answering),
        ("settlement commit", found.settling),
    ]
    settled = found.on_path + found.off_path
    lines = [f"== {name}: {requests} requests", "| phase | p50 µs |", "|---|---:|"]
    lines += [f"| {label} | {us(values)} |" for label, values in rows]
    share = found.on_path / settled if settled else 0.0
    lines.append(
        f"settlements committed after the next request was read: {found.on_path} of "
        f"{settled} ({share:.0%})"
    )
    return "\n".join(lines)


def _recorded(pid: int, target: Target, seconds: float, out: Path) -> int:
    perf = shutil.which("perf")
    if perf is None:
        raise SystemExit("perf not found")
    command = [perf, "record", "-q", "-o", str(out), "-p", str(pid)]
    for event in EVENTS:
        command += ["-e", event]
    spy = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    time.sleep(1.5)  # attached
    done = asyncio.run(_load(target, seconds, 1))
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    return done


def full_policy_variants(baseline: str | None) -> dict[str, dict[str, Any]]:
    """The full-policy gateway of this tree, and of ``baseline`` (a ``src/``) if given."""
    trees = {"this tree": None} | ({"baseline": baseline} if baseline else {})
    return {
        name: {**FULL_POLICY, SOURCE: source} if source else FULL_POLICY
        for name, source in trees.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--baseline", default=None, help="another source tree (its src/)")
    args = parser.parse_args()
    variants = full_policy_variants(args.baseline)
    with stack(variants=variants) as s, tempfile.TemporaryDirectory() as tmp:
        for name in variants:
            target = gateway_target(s, name, "/v1/chat/completions")
            asyncio.run(_load(target, 2, 1))  # warm-up
            out = Path(tmp) / f"{name.replace(' ', '-')}.data"
            done = _recorded(s.pids[name], target, args.seconds, out)
            text = subprocess.run(
                ["perf", "script", "-i", str(out)], capture_output=True, text=True, check=True
            ).stdout
            print(_table(name, phases(text), done))


if __name__ == "__main__":
    main()
