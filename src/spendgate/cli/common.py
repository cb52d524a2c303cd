"""What every CLI command shares: loading the config and opening a gateway or storage."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from spendgate.errors import ConfigError, GatewayError, SpendgateError
from spendgate.settings import CONFIG_ENV, Settings
from spendgate.text import escape

if TYPE_CHECKING:  # imported where used: `spendgate --help` needs neither (CLI start)
    from spendgate.config import Config
    from spendgate.gateway import Gateway

T = TypeVar("T")

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: $SPENDGATE_CONFIG, else ./spendgate.yaml).",
)


def failure(message: str) -> click.ClickException:
    """An error for the terminal: nothing it quotes (a name, a path) reaches the terminal
    as a control character."""
    return click.ClickException(escape(message, reversible=False))


def load(config_path: str | None) -> tuple[Config, Path, Settings]:
    from spendgate.config import load_config

    settings = Settings.from_environment()
    path = settings.config_path(config_path)
    try:
        return load_config(path), path, settings
    except ConfigError as exc:
        if config_path is None and not path.exists():
            raise failure(_no_config(path, settings)) from None
        raise failure(str(exc)) from None


def _no_config(path: Path, settings: Settings) -> str:
    """No -c given and no file where spendgate looked: say where it looked and how to say."""
    if settings.env.get(CONFIG_ENV):
        return f"{path}: no such config file (named by ${CONFIG_ENV}); fix it or pass -c PATH"
    return (
        f"no config file: {path} does not exist in {Path.cwd()}. Pass one with -c PATH "
        f"(--config), or set {CONFIG_ENV}=PATH"
    )


def gateway_for(config_path: str | None, *, need_providers: bool = False) -> Gateway:
    from spendgate.gateway import build_gateway

    config, path, settings = load(config_path)
    try:
        return build_gateway(
            config,
            source=str(path),
            env=settings.env,
            require_secrets=need_providers,
            base_dir=path.parent,
        )
    except SpendgateError as exc:
        raise failure(str(exc)) from None


def run_with_storage(gateway: Gateway, action: Callable[[Gateway], Awaitable[T]]) -> T:
    import asyncio

    async def main() -> T:
        await gateway.storage.open()
        try:
            return await action(gateway)
        finally:
            await gateway.storage.close()

    try:
        return asyncio.run(main())
    except GatewayError as exc:
        raise failure(exc.message) from None
    except SpendgateError as exc:
        raise failure(str(exc)) from None


def table(
    header: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[int] = ()
) -> str:
    """A plain-text table whose every column is as wide as its widest cell, so no cell is
    ever cut: a budget, limit, member or key id reads in full, to be pasted back into the
    command that takes it. Columns are two spaces apart; those in ``right`` (by index) are
    right-aligned; the last is not padded. Cells must already be escaped for a terminal."""
    body = [list(row) for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    last = len(header) - 1

    def line(cells: Sequence[str]) -> str:
        out = []
        for index, (cell, width) in enumerate(zip(cells, widths, strict=True)):
            if index in right:
                out.append(cell.rjust(width))
            else:
                out.append(cell if index == last else cell.ljust(width))
        return "  ".join(out).rstrip()

    return "\n".join(line(cells) for cells in [list(header), *body])
