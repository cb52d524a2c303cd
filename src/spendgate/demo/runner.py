"""`run_demo`: the simulated provider, the real gateway on SQLite, synthetic traffic and a
live view of the ledger, all in this process and on one event loop.

Shutdown, whether the time is up or Ctrl-C came: stop sending (on Ctrl-C, cut the calls in
flight as a client would; else let the keys whose chapter of the story is still open go on
until it has happened, for at most ``CHAPTER_S``), stop the gateway (drain, flush the
ledger), stop the simulator.
The summary is then read from the flushed SQLite file with a storage of its own, so it shows
exactly what ``spendgate usage`` will show. Then, unless Ctrl-C came, the routing chapter
(`spendgate.demo.routing_run`) runs on the same simulator, with a gateway and ledger of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from spendgate.clock import Clock, SystemClock
from spendgate.config import Config
from spendgate.config.build import build_budget_book
from spendgate.demo.display import Screen, print_ledgers, print_summary
from spendgate.demo.guards import Guards, plural, read_guards
from spendgate.demo.routing_run import ChapterResult, routing_db_path, run_routing_chapter
from spendgate.demo.scenario import (
    BUDGETED_USER,
    CAST,
    GUEST,
    ORG,
    PROVIDER_ENV,
    TEAMS,
    Person,
    afforded_requests,
    budget_usd,
    demo_config,
    guards_data,
    issue_keys,
)
from spendgate.demo.traffic import Traffic, TrafficStats
from spendgate.demo.view import RateMeter, Snapshot, read_snapshot
from spendgate.gateway import build_gateway
from spendgate.server import RunningGateway, start_gateway
from spendgate.simulator import Simulator, SimulatorOptions
from spendgate.storage.open import open_storage

REFRESH_S = 0.25
DRAIN_S = 30.0  # most calls in flight end within a few seconds; this only bounds a stuck one
CHAPTER_S = 120.0  # after the deadline, the story's open chapters get this long at most
CONFIG_MARKER = "# Written by `spendgate demo`"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    duration_s: float = 20.0
    db_path: Path | None = None  # None: a fresh file in a new temporary folder
    port: int = 0  # 0: any free port
    speed: float = 1.0  # 2: pauses and provider latency halved, about twice the requests
    seed: int = 7
    routing: bool = True  # the routing chapter after the main one
    command: str = "spendgate"  # how the explore commands it prints call the CLI


@dataclass(frozen=True, slots=True)
class DemoResult:
    snapshot: Snapshot  # read from the ledger after the gateway stopped
    guards: Guards  # budgets, clamped and retried requests, read with the snapshot
    stats: TrafficStats
    sending_s: float  # until the deadline or Ctrl-C; the calls in flight took longer
    db_path: Path
    config_path: Path | None
    interrupted: bool
    routing: ChapterResult | None = None  # None: skipped, or cut by Ctrl-C
    open_chapters: tuple[str, ...] = ()  # keys whose chapter never came (cut, or too slow)


def simulator_options(speed: float) -> SimulatorOptions:
    """A provider with a real one's pace; requests refine it with ``x-sim-*`` headers."""
    return SimulatorOptions(
        first_byte_delay_ms=300 / speed,
        chunk_delay_ms=25 / speed,
        tokens_per_chunk=8,
        record_requests=False,
    )


def fresh_db_path() -> Path:
    return Path(tempfile.mkdtemp(prefix="spendgate-demo-")) / "demo.db"


def write_explore_config(db_path: Path, guards: dict[str, Any] | None = None) -> Path | None:
    """``<db>.yaml``: a config whose storage is the demo's ledger, for ``spendgate usage``,
    and (``guards``: the demo's budgets and limits) for ``spendgate budgets``.

    Returns None, writing nothing, when a file of that name exists and is not the demo's.
    """
    path = Path(f"{db_path}.yaml")
    if path.exists() and not path.read_text(encoding="utf-8").startswith(CONFIG_MARKER):
        return None
    data = {
        "storage": {"url": f"sqlite:///{db_path.resolve()}"},
        "orgs": {ORG: {"teams": list(TEAMS)}},
        **(guards or {}),
    }
    header = (
        f"{CONFIG_MARKER}: it points spendgate's CLI at the demo's ledger.\n"
        f"#   spendgate usage -c {path} --by user\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


@contextlib.contextmanager
def interrupt_event() -> Iterator[asyncio.Event]:
    """An event set by the first SIGINT/SIGTERM; a second one interrupts as usual."""
    loop = asyncio.get_running_loop()
    event = asyncio.Event()
    installed: list[signal.Signals] = []

    def on_signal() -> None:
        event.set()
        for signum in installed:
            loop.remove_signal_handler(signum)

    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, on_signal)
            installed.append(signum)
    try:
        yield event
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


async def run_demo(options: DemoOptions, console: Console) -> DemoResult:
    db_path = options.db_path or fresh_db_path()
    db_path.parent.mkdir(parents=True, exist_ok=True)
    chapter: ChapterResult | None = None
    with interrupt_event() as interrupted:
        async with Simulator(simulator_options(options.speed)) as simulator:
            config = demo_config(
                simulator.url, db_path, duration_s=options.duration_s, speed=options.speed
            )
            gateway = build_gateway(config, source="spendgate demo", env=PROVIDER_ENV)
            running = await start_gateway(gateway, "127.0.0.1", options.port)
            try:
                cast = await issue_keys(gateway.keys)
                guest = await gateway.keys.create(GUEST)
                _print_intro(console, running, db_path, guest.secret, options)
                stats, sending_s, elapsed_s, open_chapters = await _drive(
                    running, cast, options, console, interrupted
                )
            finally:
                await running.stop()
            snapshot, guards = await _final_snapshot(config, elapsed_s, options.duration_s)
            print_summary(
                console,
                snapshot,
                stats,
                guards,
                build_budget_book(config),
                sending_s=sending_s,
                interrupted=interrupted.is_set(),
                open_chapters=open_chapters,
            )
            if options.routing and not interrupted.is_set():
                chapter = await _routing(simulator.url, db_path, console, options, interrupted)
                console.print()
    result = DemoResult(
        snapshot,
        guards,
        stats,
        sending_s,
        db_path,
        write_explore_config(db_path, guards_data(options.duration_s, options.speed)),
        interrupted.is_set(),
        chapter,
        tuple(open_chapters),
    )
    routing = None
    if chapter is not None:
        routing = (chapter.db_path, write_explore_config(chapter.db_path))
    print_ledgers(console, db_path, result.config_path, routing, command=options.command)
    return result


async def _routing(
    sim_url: str,
    db_path: Path,
    console: Console,
    options: DemoOptions,
    interrupted: asyncio.Event,
) -> ChapterResult | None:
    """The routing chapter, unless Ctrl-C comes first (then it is cut, and None)."""
    chapter = asyncio.create_task(
        run_routing_chapter(sim_url, routing_db_path(db_path), console, seed=options.seed)
    )
    signal_seen = asyncio.create_task(interrupted.wait())
    await asyncio.wait({chapter, signal_seen}, return_when=asyncio.FIRST_COMPLETED)
    signal_seen.cancel()
    if chapter.done():
        return chapter.result()
    chapter.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await chapter
    console.print("Routing chapter stopped by Ctrl-C.", highlight=False)
    return None


def _print_intro(
    console: Console, running: RunningGateway, db_path: Path, secret: str, options: DemoOptions
) -> None:
    people = sum(1 for person in CAST if person.user)
    budget = budget_usd(options.duration_s, options.speed)
    lines = [
        "spendgate demo: a simulated OpenAI + Anthropic provider, the real gateway on SQLite "
        f"and synthetic traffic from {people} people and {len(CAST) - people} services "
        f"(org {ORG}, teams {', '.join(TEAMS)}). Offline, no API keys.",
        f"  gateway   {running.url}  (OpenAI base URL {running.url}/v1, Anthropic {running.url})",
        f"  ledger    {db_path}",
        f"  your key  {secret}  (send your own requests while it runs)",
        f"  guards    {BUDGETED_USER}, on Claude Opus all day in Claude Code, has ${budget} a "
        "day on Opus (about one request's room plus "
        f"{plural(afforded_requests(options.duration_s, options.speed), 'request')}); "
        "embeddings are limited to 4 requests/s per key (the search indexer sends "
        "bursts of 8); a triage agent is stuck re-sending one request (loop detection "
        "stops it after 3).",
        f"Running for {options.duration_s:g} s (then the story's last chapters, if a slow "
        "machine has not reached them yet); Ctrl-C stops early.",
    ]
    for line in lines:
        console.print(line, soft_wrap=True, highlight=False, markup=False)


async def _drive(
    running: RunningGateway,
    cast: list[tuple[Person, str]],
    options: DemoOptions,
    console: Console,
    interrupted: asyncio.Event,
) -> tuple[TrafficStats, float, float, list[str]]:
    """Traffic and the live view until the time is up (or Ctrl-C), then until the calls in
    flight are done and the story's chapters have happened. Returns the stats, the seconds
    spent sending, the seconds in all and the chapters that never came."""
    gateway = running.gateway
    clock = gateway.clock
    started = clock.monotonic()
    rate = RateMeter()

    async def show(screen: Screen, phase: str) -> None:
        snapshot = await read_snapshot(
            gateway.storage,
            clock,
            elapsed_s=clock.monotonic() - started,
            duration_s=options.duration_s,
            rate=rate,
            phase=phase,
        )
        screen.show(snapshot)

    traffic = Traffic(running.url, cast, speed=options.speed, seed=options.seed)
    plain_every_s = max(1.0, min(5.0, options.duration_s / 10))
    try:
        await traffic.start()
        with Screen(console, running.url, plain_every_s) as screen:
            deadline = started + options.duration_s
            while not interrupted.is_set() and clock.monotonic() < deadline:
                await _wait(interrupted, min(REFRESH_S, deadline - clock.monotonic()))
                await show(screen, "running")
            sending_s = clock.monotonic() - started
            finishing = asyncio.create_task(_finish(traffic, interrupted))
            while not finishing.done():
                await asyncio.wait({finishing}, timeout=REFRESH_S)
                await show(screen, _finishing(traffic.open_chapters()))
            await finishing
        open_chapters = traffic.open_chapters()
    finally:
        await traffic.close()
    return traffic.stats, sending_s, clock.monotonic() - started, open_chapters


def _finishing(open_chapters: list[str]) -> str:
    if not open_chapters:
        return "finishing the calls in flight"
    return f"the story goes on for {', '.join(open_chapters)}"


async def _wait(event: asyncio.Event, timeout_s: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), max(0.0, timeout_s))


async def _finish(traffic: Traffic, interrupted: asyncio.Event) -> None:
    """Let the calls in flight end; a Ctrl-C (before or during) cuts them instead."""
    if interrupted.is_set():
        await traffic.abort()
        return
    drain = asyncio.create_task(traffic.drain(DRAIN_S + CHAPTER_S))
    signal_seen = asyncio.create_task(interrupted.wait())
    await asyncio.wait({drain, signal_seen}, return_when=asyncio.FIRST_COMPLETED)
    signal_seen.cancel()
    if not drain.done():
        await traffic.abort()
    await drain


async def _final_snapshot(
    config: Config, elapsed_s: float, duration_s: float
) -> tuple[Snapshot, Guards]:
    clock: Clock = SystemClock()
    storage = open_storage(config.storage.url, clock=clock)
    await storage.open()
    try:
        snapshot = await read_snapshot(
            storage, clock, elapsed_s=elapsed_s, duration_s=duration_s, phase="done"
        )
        return snapshot, await read_guards(storage, clock, config)
    finally:
        await storage.close()
