"""The ``spendgate`` command line."""

from __future__ import annotations

import errno

import click

from spendgate import __version__
from spendgate.cli.budgets import budgets
from spendgate.cli.check import check_config
from spendgate.cli.common import config_option, failure, gateway_for
from spendgate.cli.init import init
from spendgate.cli.keys import keys
from spendgate.cli.loops import loops
from spendgate.errors import StorageError
from spendgate.logs import configure


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
def serve(config_path: str | None, host: str | None, port: int | None) -> None:
    """Run the gateway until SIGTERM/SIGINT (then drain, flush and exit)."""
    from spendgate.server import run

    gateway = gateway_for(config_path, need_providers=True)
    configure(gateway.config.server.log_level)
    bind_host = host or gateway.config.server.host
    bind_port = gateway.config.server.port if port is None else port
    try:
        run(gateway, bind_host, bind_port)
    except StorageError as exc:  # at start: a database it cannot open or write
        raise failure(
            f"cannot start: {exc}. spendgate writes its database, and the -wal and -shm "
            "files beside it: check that the file and its folder exist and are writable "
            f"(storage.url: {gateway.config.storage.url})."
        ) from None
    except OSError as exc:  # at start: the address cannot be bound
        raise failure(_cannot_listen(exc, bind_host, bind_port)) from None


def _cannot_listen(exc: OSError, host: str, port: int) -> str:
    where = f"{host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot start: {where} is already in use (another spendgate, or another "
            "program, listens there): stop it, or choose another port with --port or "
            "server.port."
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot start: no permission to listen on {where} (ports below 1024 need "
            "privileges): choose a port of 1024 or more with --port or server.port."
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot start: {host} is not an address of this machine: choose one with "
            "--host or server.host (127.0.0.1 for this machine only, 0.0.0.0 for all)."
        )
    reason = exc.strerror or str(exc)
    return f"cannot start: cannot listen on {where}: {reason}; check --host and --port."


cli.add_command(check_config)
cli.add_command(keys)
cli.add_command(budgets)
cli.add_command(loops)
cli.add_command(init)


def _register_optional() -> None:
    # usage, savings and demo live in their own modules; imported here so `spendgate --help`
    # lists them.
    from spendgate.cli.demo import demo
    from spendgate.cli.savings import savings
    from spendgate.cli.usage import blocks, usage

    cli.add_command(usage)
    cli.add_command(blocks)
    cli.add_command(savings)
    cli.add_command(demo)


_register_optional()


def main() -> None:
    cli(prog_name="spendgate")
