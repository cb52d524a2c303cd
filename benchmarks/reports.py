"""Reports over a large SQLite ledger: raw scans (before) against the hourly rollups (after).

For each size it builds a ledger of synthetic rows spread over the last 30 days as an
existing ledger (migrations 0001-0010, rows inserted in 10,000-row transactions), then
applies migration 0011, whose backfill builds the rollups (timed: what an upgrade costs).
Then, each ``--repeat`` times, interleaved:

* ``raw``: the statements the reports ran before 0011 (one scan of the period), in process;
* ``rollups``: the same reports from the rollups and the edge hours, in process;
* ``cli``: ``spendgate usage|savings|blocks --period 30d --json`` (a fresh process each);
* ``api``: ``GET /admin/usage|savings|blocks?period=30d`` on a running ``spendgate serve``.

It also measures, on the same machine in the same run, a ledger insert (100 rows per
transaction, as group commit writes them under load) without and with 0011, and what the
roll-up job spends per row.

    python -m benchmarks.reports --rows 1000000 --rows 5000000 --repeat 3

Medians are printed as a Markdown table (docs/benchmarks.md, "Reports from rollups").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ADMIN, PYTHON, free_port, wait_http
from spendgate.domain.marks import overruns, view_marks
from spendgate.domain.refusals import (
    RECENT_OUTPUTS,
    CallerModel,
    RefusalCombo,
    callers_and_models,
    combo_pairs,
    estimate_groups,
    refusal_groups,
)
from spendgate.domain.savings import SavingsBy
from spendgate.domain.totals import GroupBy, whole_hours
from spendgate.storage.sqlite import ledger as ledger_sql
from spendgate.storage.sqlite import overrun_sql, refusal_days, refusal_sql, rollups
from spendgate.storage.sqlite import rollup_sql as job_sql
from spendgate.storage.sqlite.connection import connect
from spendgate.storage.sqlite.migrate import apply_migrations, load_migrations
from spendgate.storage.sqlite.rows import INSERT_LEDGER, LEDGER, SAVINGS, SHADOW_SAVINGS, USAGE

DAY_MS = 86_400_000
BATCH = 10_000
BUDGETS = ("team-daily", "user-daily", "org-monthly", "rpm", "breaker")
MODELS = (
    ("gpt-4o", "openai"),
    ("gpt-4o-mini", "openai"),
    ("claude-sonnet-4-5", "anthropic"),
    ("claude-haiku-4-5", "anthropic"),
    ("gemini-2.5-flash", "gemini"),
    ("gemini-2.5-pro", "gemini"),
)
# nano-dollars per million output tokens, per model (refused rows' estimates)
OUTPUT_RATES = {model: 600_000_000 * (index + 1) for index, (model, _) in enumerate(MODELS)}
CEILINGS = (0, 4_096, 8_192, 32_000)
_BASE: dict[str, Any] = {
    "surface": "openai.chat",
    "tags": "[]",
    "cached_input_tokens": 0,
    "cache_write_tokens": 0,
    "reasoning_tokens": 0,
    "latency_ms": 800.0,
    "ttfb_ms": None,
    "streamed": 0,
    "client_disconnected": 0,
    "usage_estimated": 0,
    "upstream_request_id": None,
    "error": None,
    "output_ceiling": None,
    "clamped_from": None,
    "unreconciled": 0,
    "session_id": None,
    "retry_count": 0,
    "blocked_by": None,
    "would_cost_nanos": 0,
    "shadow_blocks": "[]",
    "routed_model": None,
    "route_rule": None,
    "route_kind": None,
    "baseline_model": None,
    "baseline_cost_nanos": None,
    "shadow_rule": None,
    "shadow_model": None,
    "shadow_cost_nanos": None,
    "attempt": 0,
    "fallback_from": None,
    "usage_problem": None,
    "settled_above": "[]",
    "service_tier": None,
    "tool_calls": "[]",
    "fingerprint": None,
    "would_input_nanos": 0,
    "would_output_rate": 0,
    "would_ceiling": 0,
}


def synthetic_rows(count: int, now_ms: int, seed: int = 17) -> Iterator[list[Any]]:
    """``count`` rows over the 30 days before ``now_ms``: 2,000 keys (one user each, a few
    shared service keys), 40 teams in 4 orgs, 8 services, 6 models; 3% refused (a tenth
    without estimates, as rows before 0008; 30% of them resent within the retry window,
    half of those as SDK retries), 2% with a
    fallback attempt (two rows), 15% routed, 5% under a shadow rule, 1% overruns."""
    rng = random.Random(seed)
    fields = LEDGER.fields
    made = 0
    while made < count:
        key = rng.randrange(2_000)
        model, provider = MODELS[rng.randrange(len(MODELS))]
        cost = rng.randrange(10_000, 20_000_000)
        row = dict(_BASE)
        row.update(
            request_id=f"req_{made:010d}",
            ts=now_ms - rng.randrange(30 * DAY_MS),
            key_id=f"key_{key:05d}",
            user=None if key % 50 == 0 else f"user{key:05d}",
            service=f"svc{key % 8}",
            team=f"team{key % 40:02d}",
            org=f"org{key % 4}",
            requested_model=model,
            served_model=model,
            provider=provider,
            input_tokens=rng.randrange(50, 20_000),
            output_tokens=rng.randrange(0, 2_000),
            cost_nanos=cost,
            status=200,
        )
        roll = rng.random()
        if roll < 0.03:
            legacy = rng.random() < 0.1  # refused before estimates were recorded
            row.update(
                blocked_by=BUDGETS[rng.randrange(len(BUDGETS))],
                status=429 if rng.random() < 0.5 else 402,
                cost_nanos=0,
                output_tokens=0,
                would_cost_nanos=cost * 3,
                fingerprint=f"fp{key}-{rng.randrange(20)}",
                would_input_nanos=0 if legacy else cost // 2,
                would_output_rate=0 if legacy else OUTPUT_RATES[model],
                would_ceiling=CEILINGS[rng.randrange(len(CEILINGS))],
            )
            if rng.random() < 0.3 and made + 1 < count:  # resent within the retry window
                yield [row[f] for f in fields]
                made += 1
                row.update(
                    request_id=f"req_{made:010d}",
                    ts=min(row["ts"] + rng.randrange(5_000), now_ms - 1),
                    retry_count=rng.randrange(2),
                )
        elif roll < 0.18:
            row.update(
                route_kind=("alias", "rewrite", "downgrade")[rng.randrange(3)],
                routed_model=model,
                baseline_cost_nanos=cost * 2,
            )
        if rng.random() < 0.05 and row["blocked_by"] is None:
            row.update(shadow_rule="try-mini", shadow_cost_nanos=cost // 3)
        if rng.random() < 0.01 and row["blocked_by"] is None:
            row.update(settled_above='["team-daily"]')
        if rng.random() < 0.02 and row["blocked_by"] is None and made + 1 < count:
            failed = dict(row, status=503, cost_nanos=0, output_tokens=0)
            yield [failed[f] for f in fields]
            row.update(request_id=f"{row['request_id']}-1", attempt=1)
            made += 1
        yield [row[f] for f in fields]
        made += 1


def build(path: Path, count: int, now_ms: int) -> tuple[float, float]:
    """An existing ledger of ``count`` rows, then migration 0011: (insert s, backfill s)."""
    migrations = load_migrations()
    conn = connect(str(path))
    apply_migrations(conn, migrations[:10], lambda: now_ms)
    started = time.perf_counter()
    batch: list[list[Any]] = []
    for row in synthetic_rows(count, now_ms):
        batch.append(row)
        if len(batch) == BATCH:
            _insert(conn, batch)
            batch = []
    _insert(conn, batch)
    inserted = time.perf_counter() - started
    started = time.perf_counter()
    apply_migrations(conn, migrations, lambda: now_ms)
    backfill = time.perf_counter() - started
    conn.close()
    return inserted, backfill


def _insert(conn: sqlite3.Connection, rows: list[list[Any]]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(INSERT_LEDGER, rows)
    conn.execute("COMMIT")


def insert_cost(folder: Path, now_ms: int, rows: int = 20_000) -> dict[str, float]:
    """CPU microseconds per row: inserted 100 to a transaction without and with 0011, 0014
    (two indexes on answered rows), 0015 (the team index dropped) and 0016-0018 (0017's two
    partial indexes), and added to the rollups by the roll-up job (`rollups.roll_up`, its
    own batches; wall microseconds)."""
    migrations = load_migrations()
    found: dict[str, list[float]] = {
        "insert without 0011": [],
        "insert with 0011": [],
        "insert with 0014": [],
        "insert with 0015": [],
    }
    found["insert with 0016-0018"] = []
    found["roll-up job without 0016's steps"] = []
    found["0018's step of the roll-up job alone"] = []
    found["roll-up job"] = []
    data = list(synthetic_rows(rows, now_ms, seed=3))
    for _ in range(3):
        for name, upto in (
            ("insert without 0011", 10),
            ("insert with 0011", 11),
            ("insert with 0014", 14),
            ("insert with 0015", 15),
            ("insert with 0016-0018", len(migrations)),
        ):
            path = folder / f"insert-{upto}.db"
            path.unlink(missing_ok=True)
            conn = connect(str(path))
            apply_migrations(conn, migrations[:upto], lambda: now_ms)
            started = time.process_time()  # CPU: what a loaded machine moves least
            for index in range(0, len(data), 100):
                _insert(conn, data[index : index + 100])
            found[name].append((time.process_time() - started) / len(data) * 1e6)
            if upto == len(migrations):
                conn.close()
                for job in (
                    "roll-up job without 0016's steps",
                    "0018's step of the roll-up job alone",
                ):
                    copy = folder / "insert-copy.db"
                    shutil.copyfile(path, copy)
                    found[job].append(_job_cost(copy, len(data), job))
                    copy.unlink()
                found["roll-up job"].append(_job_cost(path, len(data), "roll-up job"))
                continue
            conn.close()
    return {name: statistics.median(values) for name, values in found.items()}


def _roll_up_0015(conn: sqlite3.Connection) -> int:
    """`rollups.roll_up` without 0016's steps (the days' running sums, the list of
    combinations, the kept medians): the job as it was before 0016."""
    mark = int(conn.execute(job_sql.MARK).fetchone()[0])
    last = min(int(conn.execute(job_sql.LAST_ID).fetchone()[0]), mark + rollups.ROLL_BATCH)
    if last <= mark:
        return 0
    conn.execute(job_sql.SEEN_TABLE)
    conn.execute(job_sql.SEEN_CLEAR)
    conn.execute(job_sql.SEEN_FILL, (mark, last))
    for statement in (job_sql.ROLL_USAGE, job_sql.ROLL_BLOCKS, job_sql.ROLL_SHADOW):
        conn.execute(statement, (mark, last))
    conn.execute(refusal_days.DELTA_TABLE)
    conn.execute(refusal_days.DELTA_CLEAR)
    for statement in (refusal_sql.ROLL_TAKEN_BACK, refusal_sql.ROLL_NEW):
        conn.execute(statement, {"mark": mark, "last": last})
    conn.execute(refusal_days.TO_HOURLY)
    conn.execute(refusal_days.DELTA_CLEAR)
    conn.execute(job_sql.SEEN_CLEAR)
    conn.execute(job_sql.SET_MARK, (last,))
    return last - mark


def _job_cost(path: Path, rows: int, job: str) -> float:
    """Wall µs per row the roll-up job (``job``: as now, without 0016's steps, or 0018's
    step alone) takes to roll up the ledger at ``path``."""
    conn = connect(str(path))
    roll = _roll_up_0015 if "0016" in job else rollups.roll_up
    if "0018" in job:
        roll = _overrun_step
    started = time.perf_counter()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        step = roll(conn)
        conn.execute("COMMIT")
        if step < rollups.ROLL_BATCH:
            break
    conn.close()
    return (time.perf_counter() - started) / rows * 1e6


def _overrun_step(conn: sqlite3.Connection) -> int:
    """0018's step of the job alone (`overrun_sql.roll_up`) over the next batch, the mark
    moved as the job moves it: what 0018 adds to the job."""
    mark = int(conn.execute(job_sql.MARK).fetchone()[0])
    last = min(int(conn.execute(job_sql.LAST_ID).fetchone()[0]), mark + rollups.ROLL_BATCH)
    if last <= mark:
        return 0
    overrun_sql.roll_up(conn, mark, last)
    conn.execute(job_sql.SET_MARK, (last,))
    return last - mark


# ---------------------------------------------------------------------------- timings


def _raw_usage(conn: sqlite3.Connection, low: int, high: int) -> object:
    return conn.execute(USAGE[GroupBy.TEAM], (low, high)).fetchall()


def _raw_savings(conn: sqlite3.Connection, low: int, high: int) -> object:
    groups = conn.execute(SAVINGS["team"], (low, high)).fetchall()
    return groups, conn.execute(SHADOW_SAVINGS, (low, high)).fetchall()


def _raw_blocks(conn: sqlite3.Connection, low: int, high: int) -> object:
    return [
        conn.execute(rollups._BLOCKED[0], (low, high)).fetchall(),
        conn.execute(rollups._SHADOW_HITS[0], (low, high)).fetchall(),
        conn.execute(rollups._OVERRUNS[0], (low, high)).fetchall(),
    ]


# The estimate's samples as read before 0014: one window over every answered row of 30 days.
_OLD_RECENT_OUTPUTS = (
    "WITH r AS (SELECT key_id, COALESCE(routed_model, requested_model) AS model, "
    "output_tokens, ts, request_id FROM ledger "
    "WHERE ts >= ? AND ts < ? AND blocked_by IS NULL AND status < 400 "
    "AND COALESCE(routed_model, requested_model) IN (SELECT value FROM json_each(?))) "
    "SELECT key_id, model, output_tokens, n FROM (SELECT key_id, model, output_tokens, "
    "ROW_NUMBER() OVER (PARTITION BY key_id, model ORDER BY ts DESC, request_id DESC) AS n "
    "FROM r WHERE key_id IN (SELECT value FROM json_each(?))) WHERE n <= ? "
    "UNION ALL "
    "SELECT NULL, model, output_tokens, n FROM (SELECT model, output_tokens, "
    "ROW_NUMBER() OVER (PARTITION BY model ORDER BY ts DESC, request_id DESC) AS n "
    "FROM r) WHERE n <= ? "
    "ORDER BY 1, 2, 4"
)
_MARKED = (
    f"SELECT {LEDGER.columns} FROM ledger "  # noqa: S608
    "WHERE ts >= ? AND ts < ? AND (blocked_by IS NOT NULL OR settled_above != '[]') "
    "ORDER BY ts, id"
)


def _blocks_before(conn: sqlite3.Connection, low: int, high: int) -> object:
    """The blocks report's refusal figures as computed before 0014: every refused row of
    the period loaded and folded, the samples from a window over 30 days of rows."""
    rows = [LEDGER.load(row) for row in conn.execute(_MARKED, (low, high))]
    refused = [row for row in rows if row.blocked_by is not None]
    pairs = callers_and_models(refused)
    wanted = set(pairs)
    models = json.dumps(sorted({model for _, model in pairs}))
    keys = json.dumps(sorted({key for key, _ in pairs}))
    samples: dict[CallerModel, list[int]] = {}
    if pairs:
        params = (high - 30 * DAY_MS, high, models, keys, RECENT_OUTPUTS, RECENT_OUTPUTS)
        for key, model, output, _ in conn.execute(_OLD_RECENT_OUTPUTS, params):
            if key is None or (key, model) in wanted:
                samples.setdefault((key, model), []).append(output)
    return rollups.blocks(conn, low, high), refusal_groups(refused, samples)


def _combos_0014(conn: sqlite3.Connection, low: int, high: int) -> list[RefusalCombo]:
    """`rollups.refusals` as 0014 read it: every whole hour from ``refusals_hourly``."""
    first, end = whole_hours(low, high) or (low, low)
    mark = int(conn.execute(job_sql.MARK).fetchone()[0])
    whole = {"since": low, "first": first, "end": end, "mark": mark}
    found: dict[tuple[str, str, str, int, int], list[int]] = {}
    statements = [
        (refusal_sql.ROLLED, {"first": first, "end": end}),
        (refusal_sql.CORRECTION, whole),
        (refusal_sql.PAST, whole),
        (refusal_sql.RAW, {"since": low, "low": low, "high": first}),
        (refusal_sql.RAW, {"since": low, "low": end, "high": high}),
    ]
    for sql, params in statements:
        for name, key, model, ceiling, rate, *sums in conn.execute(sql, params):
            values = found.setdefault((name, key, model, ceiling, rate), [0, 0, 0])
            for index, value in enumerate(sums):
                values[index] += value
    return [RefusalCombo(*c, *v) for c, v in sorted(found.items()) if v[0] != 0]


def _walked_medians(
    conn: sqlite3.Connection, pairs: list[tuple[str, str]], low: int, high: int
) -> dict[CallerModel, int]:
    """`output_medians` as 0014 took them: an index walk per pair and per model."""
    found: dict[CallerModel, int] = {}
    wanted: list[tuple[CallerModel, str]] = [(pair, ledger_sql._KEY_MEDIAN) for pair in pairs]
    wanted += [((None, m), ledger_sql._MODEL_MEDIAN) for m in sorted({m for _, m in pairs})]
    for (key, model), sql in wanted:
        row = conn.execute(sql, (key, model, low, high, RECENT_OUTPUTS)).fetchone()
        if row is not None:
            found[(key, model)] = row[0]
    return found


def _blocks_0014(conn: sqlite3.Connection, low: int, high: int) -> object:
    """The blocks report as 0014 computed it: the combinations from the hourly rollups,
    the medians walked, the estimate folded from `RefusalCombo`s."""
    combos = _combos_0014(conn, low, high)
    typical = _walked_medians(conn, combo_pairs(combos), high - 30 * DAY_MS, high)
    samples = {who: [value] for who, value in typical.items()}
    return rollups.blocks(conn, low, high), estimate_groups(combos, samples)


def _blocks_after(conn: sqlite3.Connection, low: int, high: int) -> object:
    """The same from 0016 (`SqliteLedger.refusal_estimates`: the days' running sums, the
    kept medians, the estimate summed from the parts), in one read transaction."""
    estimates = rollups.read(conn, lambda c: ledger_sql.refusal_estimates(c, low, high))
    return rollups.blocks(conn, low, high), estimates


def _budgets_view_before(conn: sqlite3.Connection, low: int, high: int) -> object:
    """What a budgets view with a 30-day budget read on SQLite before `fifty`
    (`SqliteLedger.marked` over the window, narrowed and its overruns counted in Python by
    `spendgate.domain.marks`, as a ledger without `MarksReader` still does)."""
    marked = [LEDGER.load(row) for row in conn.execute(ledger_sql._MARKED, (low, high))]
    since, until = (datetime.fromtimestamp(ms / 1000, UTC) for ms in (low, high))
    recent = datetime.fromtimestamp((high - 60_000) / 1000, UTC)
    return view_marks(marked, recent), overruns(marked, since, until)


def _budgets_view(conn: sqlite3.Connection, low: int, high: int) -> object:
    """What the view reads since 0018: the marked rows narrowed in SQLite
    (`SqliteLedger.view_marks`, the overruns no longer among them) and the overruns counted
    per name, scope and member from their rollups (`SqliteLedger.overruns`)."""
    params = (low, high - 60_000, high)
    rows = [LEDGER.load(row[:-1]) for row in conn.execute(ledger_sql._VIEW_MARKS, params)]
    return rows, rollups.read(conn, lambda c: overrun_sql.counts(c, low, high))


def in_process(
    path: Path, now_ms: int, before: bool = True, way_0014: bool = True
) -> dict[str, Callable[[], object]]:
    conn = connect(str(path))
    low, high = now_ms - 30 * DAY_MS, now_ms + 1
    old: dict[str, Callable[[], object]] = {
        "blocks report, rows folded (before 0014)": lambda: _blocks_before(conn, low, high)
    }
    if way_0014:
        old["blocks report, hourly rollups, medians walked (0014)"] = lambda: _blocks_0014(
            conn, low, high
        )
    found = {
        **old,
        "blocks report, days and kept medians (0016)": lambda: _blocks_after(conn, low, high),
        "usage raw": lambda: _raw_usage(conn, low, high),
        "usage rollups": lambda: rollups.usage(conn, GroupBy.TEAM, low, high),
        "savings raw": lambda: _raw_savings(conn, low, high),
        "savings rollups": lambda: rollups.savings(conn, SavingsBy.TEAM, low, high),
        "blocks raw": lambda: _raw_blocks(conn, low, high),
        "blocks rollups": lambda: rollups.blocks(conn, low, high),
        "budgets view rows, narrowed in Python (before)": lambda: _budgets_view_before(
            conn, low, high
        ),
        "budgets view, marked rows and overrun rollups (0018)": lambda: _budgets_view(
            conn, low, high
        ),
    }
    if not before:  # minutes at 5M rows, and the view's 43 s at 50M
        del found["blocks report, rows folded (before 0014)"]
        del found["budgets view rows, narrowed in Python (before)"]
    return found


def cli_runs(config: Path) -> dict[str, Callable[[], object]]:
    def run(*args: str) -> Callable[[], object]:
        command = [PYTHON, "-m", "spendgate", *args, "-c", str(config)]
        env = {**os.environ, "SIM_KEY": "sk-unused"}
        return lambda: subprocess.run(command, check=True, capture_output=True, env=env)

    return {
        "usage cli": run("usage", "--json", "--period", "30d"),
        "savings cli": run("savings", "--json", "--period", "30d"),
        "blocks cli": run("blocks", "--json", "--period", "30d"),
        "budgets cli": run("budgets", "--json"),  # the budget's own window: 30 days
    }


def api_runs(url: str) -> dict[str, Callable[[], object]]:
    def get(path: str) -> Callable[[], object]:
        request = urllib.request.Request(  # noqa: S310 - loopback
            f"{url}{path}", headers={"authorization": f"Bearer {ADMIN}"}
        )

        def call() -> object:
            with urllib.request.urlopen(request, timeout=300) as response:  # noqa: S310
                return response.read()

        return call

    return {
        "usage api": get("/admin/usage?period=30d&group_by=team"),
        "savings api": get("/admin/savings?period=30d&group_by=team"),
        "blocks api": get("/admin/blocks?period=30d"),
        "budgets api": get("/admin/budgets"),
    }


def timed(runs: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    found: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeat):  # interleaved rounds: machine noise hits every variant alike
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            found[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in found.items()}


def write_config(folder: Path, db: Path) -> Path:
    config = {
        "server": {"log_level": "warning"},
        "storage": {"url": f"sqlite:///{db}"},
        "providers": {
            "openai": {
                "kind": "openai",
                "base_url": "http://127.0.0.1:9/v1",
                "api_key_env": "SIM_KEY",
            }
        },
        "models": {"gpt-4o-mini": {"provider": "openai"}},
        # a budget named as the synthetic refusals are, over 30 days: the view reads the
        # window's marked rows
        "budgets": [
            {
                "name": "org-monthly",
                "scope": "org",
                "match": "org0",
                "limit_usd": "1000000",
                "period": "rolling:30d",
            }
        ],
    }
    path = folder / "reports.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def from_base(db: Path, base: Path, now_ms: int) -> dict[str, float]:
    """A copy of a ledger built by ``--build-base`` (0001-0013), upgraded: (0014-0015 s,
    0016 s)."""
    shutil.copyfile(base, db)
    conn = connect(str(db))
    migrations = load_migrations()
    found = {}
    for name, upto in (("0014-0015 s", 15), ("0016 s", len(migrations))):
        started = time.perf_counter()
        apply_migrations(conn, migrations[:upto], lambda: now_ms)
        found[name] = time.perf_counter() - started
    conn.close()
    return found


def upgrade(db: Path, now_ms: int) -> dict[str, float]:
    """The migrations an --in-place ledger lacks, applied and timed (before any run, so
    that the CLI's first round does not apply them)."""
    conn = connect(str(db))
    started = time.perf_counter()
    applied = apply_migrations(conn, load_migrations(), lambda: now_ms)
    conn.close()
    return {f"migrations {applied} s": time.perf_counter() - started}


def build_base(path: Path, count: int, now_ms: int) -> None:
    """``count`` rows under 0001-0010, then 0011-0013 (0011's backfill): what a ledger
    looked like before 0014, to upgrade copies of (``--base``)."""
    migrations = load_migrations()[:13]
    conn = connect(str(path))
    apply_migrations(conn, migrations[:10], lambda: now_ms)
    batch: list[list[Any]] = []
    for row in synthetic_rows(count, now_ms):
        batch.append(row)
        if len(batch) == BATCH:
            _insert(conn, batch)
            batch = []
    _insert(conn, batch)
    apply_migrations(conn, migrations, lambda: now_ms)
    conn.close()


def _of_blocks(name: str) -> bool:
    return name.startswith("blocks") and "raw" not in name


def measure(
    folder: Path,
    count: int,
    repeat: int,
    base: Path | None = None,
    *,
    cli: bool = True,
    before: bool = True,
    in_place: bool = False,
    only_blocks: bool = False,
    raw: bool = True,
    way_0014: bool = True,
    only_budgets: bool = False,
    migrate: bool = False,
) -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    db = folder / f"ledger-{count}.db"
    results: dict[str, float]
    if base is not None and in_place:  # a ledger upgraded already (`benchmarks.bulk_ledger`)
        db = base
        results = upgrade(db, now_ms) if migrate else {}
    elif base is not None:
        results = from_base(db, base, now_ms)
    else:
        inserted, backfill = build(db, count, now_ms)
        results = {"insert s": inserted, "0011 backfill s": backfill}
    runs = in_process(db, now_ms, before, way_0014)
    if only_blocks:  # a ledger from `benchmarks.bulk_ledger --blocks-only`: no usage rollups
        runs = {name: run for name, run in runs.items() if _of_blocks(name)}
    if only_budgets:
        runs = {name: run for name, run in runs.items() if name.startswith("budgets")}
    if not raw:
        runs = {name: run for name, run in runs.items() if "raw" not in name}
    results.update(timed(runs, repeat))
    config = write_config(folder, db)
    if cli and not only_blocks:
        cli_steps = cli_runs(config)
        if only_budgets:
            cli_steps = {"budgets cli": cli_steps["budgets cli"]}
        results.update(timed(cli_steps, repeat))
    port = free_port()
    env = {**os.environ, "SIM_KEY": "sk-unused", "SPENDGATE_ADMIN_TOKEN": ADMIN}
    server = subprocess.Popen(
        [PYTHON, "-m", "spendgate", "serve", "-c", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz", timeout=120)
        api = api_runs(url)
        if only_blocks:
            api = {name: run for name, run in api.items() if _of_blocks(name)}
        if only_budgets:
            api = {"budgets api": api["budgets api"]}
        results.update(timed(api, repeat))
    finally:
        server.terminate()
        server.wait(timeout=30)
    if db != base:
        db.unlink()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="ledger size (repeatable)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: tmp)")
    parser.add_argument(
        "--base", type=Path, action="append", help="a ledger from --build-base (repeatable)"
    )
    parser.add_argument("--build-base", type=Path, help="build a ledger of --rows to FILE, exit")
    parser.add_argument("--skip-cli", action="store_true", help="in process and API only")
    parser.add_argument(
        "--no-before",
        dest="before",
        action="store_false",
        help="skip the blocks report as computed before 0014 (minutes at 5M rows)",
    )
    parser.add_argument(
        "--no-insert-cost", dest="insert_cost", action="store_false", help="skip the insert costs"
    )
    parser.add_argument(
        "--no-raw", dest="raw", action="store_false", help="skip the raw scans (before 0011)"
    )
    parser.add_argument(
        "--no-0014",
        dest="way_0014",
        action="store_false",
        help="skip the blocks report as 0014 computed it (tens of seconds at 50M rows)",
    )
    parser.add_argument(
        "--only-blocks", action="store_true", help="time the blocks report (and its API) only"
    )
    parser.add_argument(
        "--only-budgets",
        action="store_true",
        help="time the budgets view (in process, its CLI and its API) only",
    )
    parser.add_argument(
        "--migrate",
        action="store_true",
        help="with --in-place: apply (and time) the migrations the files lack first",
    )
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="time the --base files as they are (built by benchmarks.bulk_ledger), no copy",
    )
    args = parser.parse_args()
    sizes = args.rows or [1_000_000]
    if args.build_base is not None:
        build_base(args.build_base, sizes[0], int(time.time() * 1000))
        return
    with tempfile.TemporaryDirectory(prefix="spendgate-reports-", dir=args.dir) as tmp:
        folder = Path(tmp)
        cost = insert_cost(folder, int(time.time() * 1000)) if args.insert_cost else {}
        print("| µs per row | " + " | ".join(cost) + " |")
        print("| | " + " | ".join(f"{v:.1f}" for v in cost.values()) + " |")
        table: dict[int, dict[str, float]] = {}
        bases = args.base or [None] * len(sizes)
        for count, base in zip(sizes, bases, strict=True):
            table[count] = measure(
                folder,
                count,
                args.repeat,
                base,
                cli=not args.skip_cli,
                before=args.before,
                in_place=args.in_place,
                only_blocks=args.only_blocks,
                raw=args.raw,
                way_0014=args.way_0014,
                only_budgets=args.only_budgets,
                migrate=args.migrate,
            )
            print(f"{count:,} rows: {table[count]}", flush=True)
    names = list(next(iter(table.values())))
    print("\n| seconds (median) | " + " | ".join(f"{c:,} rows" for c in table) + " |")
    print("|---|" + "---|" * len(table))
    for name in names:
        print(f"| {name} | " + " | ".join(f"{table[c][name]:.3f}" for c in table) + " |")


if __name__ == "__main__":
    main()
