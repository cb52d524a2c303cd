"""Where the start of a gateway with many listed budgets goes, stage by stage, in CPU
seconds: reading the YAML (and the CSV of a ``budgets_file``), validating, building the
budget book, then the whole of ``check-config`` and of ``serve`` up to its first
``/readyz`` answer; for this source tree and, with ``--baseline SRC``, another one, side by
side (runs alternate between them; medians).

    python -m benchmarks.config_stages [--budgets 100000] [--runs 3] [--baseline SRC]

The budgets are the many-budgets benchmark's (`benchmarks.many_budgets.listed`): per-user
budgets listed one by one, each its own limit. Each stage runs in a fresh process, without
the cyclic collector (as the CLI's start runs), so imports are counted once, in the
"imports" row. CPU time, and for ``check-config`` (spawn to exit) and ``serve`` (spawn to
the first ``/readyz`` answer) wall time too: on a shared machine CPU moves far less. Where
a tree validates a ``budgets_file`` by columns as it reads it, the "CSV" row holds that
validation and "validation" the rest. Both trees are byte-compiled first (an installed
package is; with PYTHONDONTWRITEBYTECODE set, every start would compile them again).
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from benchmarks.common import PYTHON, bench_config, cpu_seconds, free_port, median, wait_http
from benchmarks.latency import machine
from benchmarks.many_budgets import listed, write_csv

# Run in the measured source tree: CPU seconds of each stage, as one line of JSON.
STAGES = r"""
import gc, json, sys, time
gc.disable()
began = time.process_time()
from pathlib import Path
from spendgate.config.build import build_budget_book
from spendgate.config.loader import parse_config
from spendgate.config.yaml_text import parse_yaml
spent = {"imports": time.process_time() - began}
path = Path(sys.argv[1])
began = time.process_time()
data = parse_yaml(str(path), path.read_text())
spent["YAML"] = time.process_time() - began
more = ()
if "budgets_file" in data:
    from spendgate.config import budget_file
    began = time.process_time()
    if hasattr(budget_file, "read_budget_specs"):  # read and validated column by column
        more = budget_file.read_budget_specs(path.parent / data["budgets_file"])
    else:  # the rows as entries, validated with the YAML's
        rows = budget_file.read_budget_rows(path.parent / data["budgets_file"]).rows
        data["budgets"] = [*data.get("budgets", []), *rows]
    spent["CSV"] = time.process_time() - began
began = time.process_time()
config = parse_config(data, "<config>", more) if more else parse_config(data)
spent["validation"] = time.process_time() - began
began = time.process_time()
build_budget_book(config)
spent["book"] = time.process_time() - began
print(json.dumps(spent))
"""

ROWS = ("imports", "YAML", "CSV", "validation", "book", "check-config", "serve to /readyz")


def _env(source: Path | None) -> dict[str, str]:
    env = {**os.environ, "SIM_KEY": "sk-sim", "SPENDGATE_ADMIN_TOKEN": "a" * 32}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    else:
        env.pop("PYTHONPATH", None)
    return env


def stages(config: Path, source: Path | None) -> dict[str, float]:
    done = subprocess.run(
        [PYTHON, "-c", STAGES, str(config)],
        env=_env(source),
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(yaml.safe_load(done.stdout.strip().splitlines()[-1]))


def check_config(config: Path, source: Path | None) -> float:
    return check_config_timed(config, source)[0]


def check_config_timed(config: Path, source: Path | None) -> tuple[float, float]:
    """CPU and wall seconds of ``check-config``, from spawning it to its exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [PYTHON, "-m", "spendgate", "check-config", "-c", str(config)]
    began = time.perf_counter()
    subprocess.run(command, env=_env(source), capture_output=True, check=True)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime), wall


def serve(config: Path, source: Path | None) -> tuple[float, float]:
    """CPU and wall seconds from spawning ``serve`` to its first ``/readyz`` answer."""
    port = free_port()
    command = [PYTHON, "-m", "spendgate", "serve", "-c", str(config), "--port", str(port)]
    began = time.perf_counter()
    proc = subprocess.Popen(command, env=_env(source), stderr=subprocess.DEVNULL)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", timeout=300)
        wall = time.perf_counter() - began
        return cpu_seconds(proc.pid), wall
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def _reads_csv(source: Path | None) -> bool:
    """Whether the source tree (None: this one) knows ``budgets_file``."""
    root = source if source is not None else Path(__file__).parents[1] / "src"
    return (root / "spendgate" / "config" / "budget_file.py").exists()


def configs(folder: Path, budgets: int) -> dict[str, Path]:
    """The same budgets in YAML and in a CSV ``budgets_file``; a config of 10 to compare."""
    made: dict[str, Path] = {}
    for name, count in (("10 in YAML", 10), ("YAML", budgets)):
        extra = {"budgets": listed(count)}
        path = folder / f"{count}.yaml"
        data = bench_config("http://127.0.0.1:9", folder / f"{count}.db", extra)
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        made[name] = path
    write_csv(folder / "budgets.csv", listed(budgets))
    data = bench_config("http://127.0.0.1:9", folder / "csv.db", {"budgets_file": "budgets.csv"})
    made["CSV"] = folder / "csv.yaml"
    made["CSV"].write_text(yaml.safe_dump(data, sort_keys=False))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--budgets", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None)
    args = parser.parse_args()
    trees: dict[str, Path | None] = {"now": None}
    if args.baseline is not None:
        trees["before"] = args.baseline
    for root in trees.values():
        compileall.compile_dir(root or Path(__file__).parents[1] / "src", quiet=1)
    found: dict[tuple[str, str], dict[str, list[float]]] = {}
    with tempfile.TemporaryDirectory(prefix="spendgate-stages-") as folder:
        made = configs(Path(folder), args.budgets)
        columns = [
            (tree, kind)
            for kind in made
            for tree in trees
            if kind != "CSV" or _reads_csv(trees[tree])  # no budgets_file before 0c2e3be
        ]
        for _ in range(args.runs):
            for tree, kind in columns:
                source, config = trees[tree], made[kind]
                spent = found.setdefault((tree, kind), {})
                for stage, seconds in stages(config, source).items():
                    spent.setdefault(stage, []).append(seconds)
                cpu, wall = check_config_timed(config, source)
                spent.setdefault("check-config", []).append(cpu)
                spent.setdefault("check-config wall", []).append(wall)
                cpu, wall = serve(config, source)
                spent.setdefault("serve to /readyz", []).append(cpu)
                spent.setdefault("serve wall", []).append(wall)
            print("run done", flush=True)
    header = " | ".join(f"{kind} ({tree})" for tree, kind in columns)
    lines = [f"| CPU s | {header} |", "|---|" + "---:|" * len(columns)]
    for row in (*ROWS, "check-config wall", "serve wall"):
        cells = []
        for column in columns:
            values = found[column].get(row)
            cells.append(f"{median(values):.2f}" if values else "—")
        label = row.replace(" wall", ", wall s")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    command = " ".join(["python -m benchmarks.config_stages", *sys.argv[1:]])
    print(
        f"Measured {stamp} on {machine()}, load average {os.getloadavg()[0]:.1f} at the end, "
        f"with `{command}` ({args.budgets:,} budgets; medians of {args.runs} runs, "
        "alternating).\n\n" + "\n".join(lines)
    )


if __name__ == "__main__":
    main()
