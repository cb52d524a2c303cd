"""The ``spendgate`` command line.

It starts fast (docs/benchmarks.md, "CLI start"): every command but ``serve`` lives in a
module of its own, imported only when that command runs (`LazyGroup`), and ``--help``
lists them from the summaries below without importing any. Nothing here imports the
server, aiohttp, pydantic or the tokenizer; ``tests/e2e/test_cli_start.py`` guards it.
"""

from __future__ import annotations

import errno
import importlib
from typing import TYPE_CHECKING

import click

from spendgate import __version__
from spendgate.cli.common import (
    config_option,
    failure,
    gateway_for,
    program_start,
    uncollected,
)
from spendgate.errors import ConfigError, SchemaTooNew, StorageError
from spendgate.logs import configure
from spendgate.settings import Settings

if TYPE_CHECKING:
    from spendgate.gateway import Gateway

# name: (module, attribute, the first line of its docstring: what `spendgate --help` shows)
LAZY: dict[str, tuple[str, str, str]] = {
    "audit": (
        "spendgate.cli.audit",
        "audit",
        "Every admin change (API and CLI): who, what, when, from what to what.",
    ),
    "alerts": (
        "spendgate.cli.alerts",
        "alerts",
        "Show the alert delivery log: alerts raised, channel, status, attempts, last error.",
    ),
    "blocks": (
        "spendgate.cli.usage",
        "blocks",
        "What budgets, limits, loop detection and breakers refused, and what it saved.",
    ),
    "budgets": (
        "spendgate.cli.budgets",
        "budgets",
        "Show budgets: spent, reserved, remaining and next reset (the default action).",
    ),
    "check-config": (
        "spendgate.cli.check",
        "check_config",
        "Validate the config file: schema, references, prices and provider secrets.",
    ),
    "demo": (
        "spendgate.cli.demo",
        "demo",
        "Run the whole product offline: simulated provider, gateway on SQLite, traffic.",
    ),
    "init": (
        "spendgate.cli.init",
        "init",
        "Write a commented starter config for the provider keys set in the environment.",
    ),
    "keys": (
        "spendgate.cli.keys",
        "keys",
        "Manage virtual keys (stored hashed; a secret is shown only once).",
    ),
    "loops": (
        "spendgate.cli.loops",
        "loops",
        "Show detected loops: key, model, strikes and until when each is blocked (the "
        "default action).",
    ),
    "me": (
        "spendgate.cli.me",
        "me",
        "Your key's identity, the budgets and limits that apply to it, and its last requests.",
    ),
    "savings": (
        "spendgate.cli.savings",
        "savings",
        "What routing saved against serving every request the model it asked for: in price, "
        "and in spend where budgets bind.",
    ),
    "tokens": (
        "spendgate.cli.tokens",
        "tokens",
        "Manage admin tokens: roles for the admin API (stored hashed; shown only once).",
    ),
    "statusline": (
        "spendgate.cli.statusline",
        "statusline",
        "One line with your remaining budget, for Claude Code's statusLine or a prompt.",
    ),
    "usage": (
        "spendgate.cli.usage",
        "usage",
        "Spend grouped by team, service, user, key, model, org or provider.",
    ),
}


class LazyGroup(click.Group):
    """A group whose commands in `LAZY` are imported when one of them is run (or asked
    for its own ``--help``), not to list them."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.commands or cmd_name not in LAZY:
            return super().get_command(ctx, cmd_name)
        module, attribute, _summary = LAZY[cmd_name]
        with uncollected():
            command = getattr(importlib.import_module(module), attribute)
        assert isinstance(command, click.Command)
        self.add_command(command, cmd_name)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows: list[tuple[str, str]] = []
        for name in names:
            loaded = self.commands.get(name)
            if loaded is not None:
                if not loaded.hidden:
                    rows.append((name, loaded.get_short_help_str(limit)))
            else:
                # click shortens a summary as it would the command's own docstring
                summary = click.Command(name, help=LAZY[name][2])
                rows.append((name, summary.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="spendgate")
def cli() -> None:
    """spendgate: an LLM gateway that caps AI token spend before the expensive call."""


@cli.command()
@config_option
@click.option("--host", default=None, help="Bind address (default: server.host).")
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Port, 1-65535 (0: any free port; default: server.port).",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=None,
    help="Worker processes serving the port (default: server.workers; docs/deploy.md).",
)
def serve(config_path: str | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the gateway until SIGTERM/SIGINT (then drain, flush and exit)."""
    from spendgate.server import run
    from spendgate.worker import WORKER_ENV, WorkerSpec

    settings = Settings.from_environment()
    spec = settings.env.get(WORKER_ENV)  # set by the supervisor for each of its workers
    worker = WorkerSpec.from_env(spec) if spec else None
    if worker is not None and worker.restart:  # as a reload refuses it (docs/deploy.md)
        from spendgate.gateway import refuse_settingless

        path = str(settings.config_path(config_path))
        try:
            refuse_settingless(path, "a restarted worker")
        except ConfigError as exc:
            raise failure(str(exc)) from None
    gateway = gateway_for(config_path, need_providers=True)
    if worker is not None and worker.pinned is not None:
        from spendgate.gateway import refuse_repinned

        try:
            refuse_repinned(gateway.config, worker.pinned, gateway.config_source)
        except ConfigError as exc:
            raise failure(str(exc)) from None
    configure(gateway.config.server.log_level)
    bind_host = host or gateway.config.server.host
    bind_port = gateway.config.server.port if port is None else port
    count = gateway.config.server.workers if workers is None else workers
    try:
        if worker is not None:
            run(gateway, bind_host, bind_port, worker)
        elif count > 1:
            _supervise(gateway, bind_host, bind_port, count)
        else:
            run(gateway, bind_host, bind_port)
    except SchemaTooNew as exc:  # at start: migrated by a newer spendgate (not a file problem)
        raise failure(f"cannot start: {exc}.") from None
    except StorageError as exc:  # at start: a database it cannot open or write
        storage = gateway.config.storage
        advice = _storage_advice(storage.url, storage.counters_url)
        raise failure(f"cannot start: {exc}. {advice}") from None
    except OSError as exc:  # at start: the address cannot be bound
        from spendgate.api.metrics import MetricsListenError

        if isinstance(exc, MetricsListenError):  # metrics.port's own listener
            raise failure(_cannot_listen(exc, exc.host, exc.port, metrics=True)) from None
        raise failure(_cannot_listen(exc, bind_host, bind_port)) from None


def _storage_advice(url: str, counters_url: str | None) -> str:
    """What to check when storage cannot be opened at start, for its kinds of database (a
    server's URL may hold a password: it is not repeated)."""
    server = "Check that the server is up, the database exists and the user may use it."
    if url.partition("://")[0].lower() != "sqlite":
        return server
    advice = (
        "spendgate writes its database, and the -wal and -shm files beside it: check that "
        f"the file and its folder exist and are writable (storage.url: {url})."
    )
    if counters_url and counters_url != url:
        advice += " For storage.counters_url: check that its server is up."
    return advice


def _supervise(gateway: Gateway, host: str, port: int, workers: int) -> None:
    from spendgate.gateway import restart_only_digests
    from spendgate.supervisor import Plan
    from spendgate.supervisor import run as supervise

    plan = Plan(
        config_path=gateway.config_source,
        host=host,
        port=port,
        workers=workers,
        drain_timeout_s=gateway.config.server.drain_timeout_s,
        env=gateway.env,
        pinned=restart_only_digests(gateway.config),
    )
    code = supervise(plan)
    if code:
        raise SystemExit(code)


def _cannot_listen(exc: OSError, host: str, port: int, *, metrics: bool = False) -> str:
    """Why ``host:port`` cannot be listened on, and the setting that changes it: the
    gateway's (``--port``, ``server.port``) or, with ``metrics``, ``metrics.port``'s."""
    where = f"{host}:{port}" + (" (metrics.port)" if metrics else "")
    port_key = "metrics.port" if metrics else "--port or server.port"
    host_key = "metrics.host" if metrics else "--host or server.host"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot start: {where} is already in use (another spendgate, or another "
            f"program, listens there): stop it, or choose another port with {port_key}."
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot start: no permission to listen on {where} (ports below 1024 need "
            f"privileges): choose a port of 1024 or more with {port_key}."
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot start: {host} is not an address of this machine: choose one with "
            f"{host_key} (127.0.0.1 for this machine only, 0.0.0.0 for all)."
        )
    reason = exc.strerror or str(exc)
    checked = "metrics.host and metrics.port" if metrics else "--host and --port"
    return f"cannot start: cannot listen on {where}: {reason}; check {checked}."


def main() -> None:
    program_start()
    cli(prog_name="spendgate")
