"""``spendgate demo``: the simulated provider, the gateway and synthetic traffic, offline."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from rich.console import Console

from spendgate.cli.common import failure
from spendgate.errors import SpendgateError


@click.command()
@click.option(
    "--duration",
    type=click.FloatRange(min=1),
    default=20.0,
    show_default=True,
    help="Seconds of traffic (then the calls in flight finish).",
)
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite ledger to write (default: a fresh file in a new temporary folder).",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Gateway port on 127.0.0.1 (0: any free port).",
)
@click.option(
    "--speed",
    type=click.FloatRange(min=0.1, max=10),
    default=1.0,
    show_default=True,
    help="Traffic speed: 2 halves pauses and provider latency (about twice the requests).",
)
@click.option(
    "--routing/--no-routing",
    default=True,
    show_default=True,
    help="Then the routing chapter: the same requests on a strong, then a cheaper default.",
)
def demo(duration: float, db_path: Path | None, port: int, speed: float, routing: bool) -> None:
    """Run the whole product offline: simulated provider, gateway on SQLite, traffic."""
    from spendgate.demo import DemoOptions, run_demo

    options = DemoOptions(
        duration_s=duration, db_path=db_path, port=port, speed=speed, routing=routing
    )
    try:
        asyncio.run(run_demo(options, Console(highlight=False)))
    except SpendgateError as exc:
        raise failure(str(exc)) from None
    except OSError as exc:
        raise failure(f"the demo could not start: {exc}") from None
