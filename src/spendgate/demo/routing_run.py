"""The routing chapter: the same requests through one gateway twice, on an SQLite ledger of
its own, first with ``default`` on the strongest models, then, after a hot reload of the
config (`spendgate.gateway.Gateway.reload`), on cheaper ones. The numbers are then read from
the ledger with a storage of its own (`spendgate.demo.routing_report`).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import aiohttp
from rich.console import Console

from spendgate.clock import Clock, SystemClock
from spendgate.config import Config
from spendgate.demo.calls import build_request
from spendgate.demo.routing_report import PhaseSpend, chapter_lines, phase_spend
from spendgate.demo.routing_scenario import (
    ALIAS,
    CHEAP,
    PINNED_MODEL,
    PINNED_USERS,
    REWRITTEN_TEAM,
    SPEED,
    STRONG,
    ChapterCall,
    Phase,
    chapter_calls,
    routing_config,
)
from spendgate.demo.scenario import HEAVY_USERS, PROVIDER_ENV, issue_keys
from spendgate.domain.ledger import LedgerRow
from spendgate.gateway import build_gateway
from spendgate.server import RunningGateway, start_gateway
from spendgate.storage.open import open_storage

CONCURRENCY = 16
SOURCE = "spendgate demo (routing)"
SWITCHED = "the config reloaded in the running gateway, no restart"


@dataclass(frozen=True, slots=True)
class ChapterResult:
    before: PhaseSpend
    after: PhaseSpend
    calls: int  # requests sent in each phase
    failed: int  # calls answered with an error, or not at all, in both phases
    db_path: Path


def routing_db_path(db_path: Path) -> Path:
    """The chapter's ledger, next to the main one: ``demo.db`` -> ``demo-routing.db``."""
    return db_path.with_name(f"{db_path.stem}-routing{db_path.suffix or '.db'}")


async def switch_config(running: RunningGateway, config: Config) -> None:
    """Put ``config`` in force in the running gateway: same port, same ledger, same keys.
    (Without hot reload: stop ``running`` and `start_gateway` a new one with ``config``.)"""
    await running.gateway.reload(config)


async def send_all(url: str, calls: Sequence[ChapterCall], secrets: dict[str, str]) -> int:
    """Every call, at most `CONCURRENCY` at once; how many got no successful answer."""
    limit = asyncio.Semaphore(CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:

        async def send(item: ChapterCall) -> bool:
            secret = secrets[item.person.key_name]
            session = f"{item.person.key_name}/routing"
            rng = random.Random(item.seed)
            request = build_request(item.call, secret, rng, speed=SPEED, session=session)
            async with limit:
                try:
                    async with http.post(
                        url + request.path, data=request.body, headers=request.headers
                    ) as reply:
                        await reply.read()
                        return reply.status < 400
                except (aiohttp.ClientError, TimeoutError):
                    return False

        answers = await asyncio.gather(*(send(item) for item in calls))
    return sum(1 for ok in answers if not ok)


def intro_lines(calls: int, db_path: Path) -> list[str]:
    pinned = " and ".join(PINNED_USERS)
    return [
        f"Routing: the same {calls} requests twice, from the same keys, on a ledger of their "
        f"own ({db_path}).",
        f"  before  `{ALIAS}` is the strongest model ({STRONG['anthropic']} on the Anthropic "
        f"API, {STRONG['openai']} on OpenAI's); {pinned} ask for {PINNED_MODEL} by name; "
        "shadow rules try the cheaper default on the side.",
    ]


def after_line() -> str:
    return (
        f"  after   {SWITCHED}: `{ALIAS}` is {CHEAP['anthropic']} / {CHEAP['openai']}, "
        f"rule {REWRITTEN_TEAM}-no-opus rewrites team {REWRITTEN_TEAM}'s Opus requests to "
        f"{CHEAP['anthropic']}, and a shadow rule tries the same for another team."
    )


async def run_routing_chapter(
    sim_url: str, db_path: Path, console: Console, *, seed: int
) -> ChapterResult:
    """Both phases, then the numbers from the ledger, printed and returned."""
    clock: Clock = SystemClock()
    calls = chapter_calls(seed)
    for line in intro_lines(len(calls), db_path):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    started = _to_ms(clock.now())
    gateway = build_gateway(
        routing_config(sim_url, db_path, Phase.BEFORE), source=SOURCE, env=PROVIDER_ENV
    )
    running = await start_gateway(gateway, "127.0.0.1", 0)
    try:
        issued = await issue_keys(gateway.keys)
        secrets = {person.key_name: secret for person, secret in issued}
        failed = await send_all(running.url, calls, secrets)
        console.print(after_line(), soft_wrap=True, highlight=False, markup=False)
        await switch_config(running, routing_config(sim_url, db_path, Phase.AFTER))
        # Every row of the first phase arrived before the reload began, every row of the
        # second after it ended.
        boundary = _to_ms(clock.now())
        failed += await send_all(running.url, calls, secrets)
    finally:
        await running.stop()
    before_rows, after_rows = await _read_phases(gateway.config, started, boundary)
    heavy = sorted(HEAVY_USERS)
    result = ChapterResult(
        before=phase_spend(before_rows, heavy, ALIAS),
        after=phase_spend(after_rows, heavy, ALIAS),
        calls=len(calls),
        failed=failed,
        db_path=db_path,
    )
    for line in chapter_lines(result.before, result.after, heavy=heavy, alias=ALIAS):
        console.print(line, soft_wrap=True, highlight=False, markup=False)
    if failed:
        console.print(f"  {failed} calls of the chapter failed.", highlight=False)
    return result


def _to_ms(moment: datetime) -> datetime:
    """Down to the millisecond, as the ledger keeps ``ts``."""
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


async def _read_phases(
    config: Config, since: datetime, boundary: datetime
) -> tuple[list[LedgerRow], list[LedgerRow]]:
    """The chapter's rows, flushed, split at the switch."""
    clock = SystemClock()
    storage = open_storage(config.storage.url, clock=clock)
    await storage.open()
    try:
        rows = await storage.ledger(since, clock.now() + timedelta(seconds=1))
    finally:
        await storage.close()
    return [r for r in rows if r.ts < boundary], [r for r in rows if r.ts >= boundary]
