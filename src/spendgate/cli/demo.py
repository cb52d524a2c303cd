"""``spendgate demo``: the simulated provider, the gateway and synthetic traffic, offline."""

from __future__ import annotations

import asyncio
import logging
import os
import shlex
import shutil
import sys
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

    # The demo shows what happens itself; the gateway's log lines (a soft threshold
    # crossed, a breaker opened) would otherwise land between its lines unformatted.
    logging.getLogger("spendgate").addHandler(logging.NullHandler())
    options = DemoOptions(
        duration_s=duration,
        db_path=db_path,
        port=port,
        speed=speed,
        routing=routing,
        command=this_command(),
    )
    try:
        asyncio.run(run_demo(options, Console(highlight=False)))
    except SpendgateError as exc:
        raise failure(str(exc)) from None
    except OSError as exc:
        raise failure(f"the demo could not start: {exc}") from None


def this_command(argv0: str | None = None) -> str:
    """How to run this same spendgate from a fresh shell, for the commands the demo prints:
    ``spendgate`` when that name on the PATH is this program, else its full path (a
    virtual environment that is not activated), else ``python -m spendgate``."""
    argv0 = sys.argv[0] if argv0 is None else argv0
    if Path(argv0).name in ("spendgate", "spendgate.exe"):
        running = Path(shutil.which(argv0) or argv0).resolve()
        on_path = shutil.which("spendgate")
        if on_path is not None and Path(on_path).resolve() == running:
            return "spendgate"
        if running.is_file() and os.access(running, os.X_OK):
            return shlex.quote(str(Path(argv0).absolute()))
    return f"{shlex.quote(sys.executable)} -m spendgate"
