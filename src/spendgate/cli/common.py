"""What every CLI command shares: loading the config and opening a gateway or storage.

Every command but ``serve`` works on a `Workspace` (`gateway_for`): the config checked as
``serve`` checks it, the budgets and models it builds, storage and the clock, and nothing a
running gateway needs besides (providers, router, events, upstream client): a report
starts in a fraction of the time (docs/benchmarks.md, "CLI start";
tests/e2e/test_cli_start.py guards which modules it imports)."""

from __future__ import annotations

import gc
import os
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, TypeVar, overload

import click

from spendgate.errors import ConfigError, GatewayError, SpendgateError
from spendgate.services.views import ServiceViews
from spendgate.settings import CONFIG_ENV, Settings
from spendgate.text import escape

if TYPE_CHECKING:  # imported where used: `spendgate --help` needs neither (CLI start)
    from spendgate.clock import Clock
    from spendgate.config import Config
    from spendgate.domain.budgets import BudgetBook
    from spendgate.domain.models import ModelTable
    from spendgate.domain.roles import Principal
    from spendgate.gateway import Gateway
    from spendgate.services.keys import KeyService
    from spendgate.storage import Storage

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


def at_most_one(*flags: tuple[str, bool]) -> None:
    """Refuse (a usage error: exit 2) flags that ask for different outputs at once
    (``--csv --json``, ``--by-hour --by-day``), naming them: one of them was silently
    dropped."""
    given = [name for name, on in flags if on]
    if len(given) > 1:
        raise click.UsageError(f"{' and '.join(given)} cannot be used together: choose one")


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


class Workspace(ServiceViews):
    """What a command other than ``serve`` works on: the config, the budgets and models it
    builds, storage (opened by `run_with_storage`) and the clock. The services it offers
    are built as the gateway builds them (`spendgate.gateway.Gateway`)."""

    def __init__(
        self,
        config: Config,
        *,
        budgets: BudgetBook,
        models: ModelTable,
        storage: Storage,
        clock: Clock,
    ) -> None:
        self._config = config
        self._budgets = budgets
        self._models = models
        self.storage = storage
        self.clock = clock

    @property
    def config(self) -> Config:
        return self._config

    @property
    def budgets(self) -> BudgetBook:
        return self._budgets

    @property
    def models(self) -> ModelTable:
        return self._models

    @property
    def keys(self) -> KeyService:
        from spendgate.services.keys import KeyService

        return KeyService(self.storage, self.config, self.clock)


def workspace(config: Config, *, source: str, base_dir: Path) -> Workspace:
    """The config's parts a command reads, built and checked as a gateway builds them
    (`spendgate.gateway.build_parts`, less providers and router, which add no check
    without provider secrets): a config ``serve`` would refuse is refused here with the
    same message."""
    from spendgate.clock import SystemClock
    from spendgate.config.build import build_budget_book, build_model_table, price_problem
    from spendgate.pricing.catalog import build_price_book
    from spendgate.storage.open import open_storage

    clock = SystemClock()
    storage = open_storage(
        config.storage.url, clock=clock, config=config.storage
    )  # first, as build_gateway does
    prices = build_price_book(config, env_base_dir=base_dir, source=source)
    models = build_model_table(config, prices)
    problem = price_problem(config, models)
    if problem is not None:
        raise ConfigError(source, *problem)
    budgets = build_budget_book(config)
    return Workspace(config, budgets=budgets, models=models, storage=storage, clock=clock)


_freeze_after_start = False  # set by the `spendgate` program (`program_start`)


def program_start() -> None:
    """The `spendgate` program runs: `uncollected` may freeze what its start made. Not
    called where `cli` runs inside another process (tests), whose older garbage a freeze
    would keep for good."""
    global _freeze_after_start
    _freeze_after_start = True


@contextmanager
def uncollected() -> Iterator[None]:
    """Run a command's start (importing its modules, loading the config, building what it
    works on) without the cyclic garbage collector: the start allocates many objects and
    frees few, so the collections it would set off find little to free; and, in the
    `spendgate` program, freeze what the start made (`gc.freeze`: the modules, classes and
    config it keeps to the end), so that no later collection walks them again. About 45
    ms of a report's start (docs/benchmarks.md, CLI start). Reference counting frees
    what it always frees, and the collector runs again after the start, so a long-running
    command (``serve``, ``demo``) collects its garbage as before."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        if _freeze_after_start:
            gc.freeze()
        gc.enable()


@contextmanager
def _without_pydantic_plugins() -> Iterator[None]:
    """Validate the config without looking for pydantic plugins: pydantic finds them by
    reading the entry points of every installed distribution (about 25 ms of a report's
    start), and none has a use in a command that reads the config and exits.
    ``serve`` looks for them as usual; so does a command run with the variable already
    set (pydantic then does what it says)."""
    if "PYDANTIC_DISABLE_PLUGINS" in os.environ:
        yield
        return
    os.environ["PYDANTIC_DISABLE_PLUGINS"] = "__all__"
    try:
        yield
    finally:
        os.environ.pop("PYDANTIC_DISABLE_PLUGINS", None)


@overload
def gateway_for(config_path: str | None, *, need_providers: Literal[True]) -> Gateway: ...


@overload
def gateway_for(config_path: str | None, *, need_providers: Literal[False] = ...) -> Workspace: ...


def gateway_for(config_path: str | None, *, need_providers: bool = False) -> Gateway | Workspace:
    """``serve`` (``need_providers``): the whole gateway, provider secrets required.
    Any other command: a `Workspace`, checked as strictly but built without the parts of
    a gateway that only serving uses."""
    if not need_providers:
        with uncollected(), _without_pydantic_plugins():
            config, path, _settings = load(config_path)
            try:
                return workspace(config, source=str(path), base_dir=path.parent)
            except SpendgateError as exc:
                raise failure(str(exc)) from None
    with uncollected():
        config, path, settings = load(config_path)
        try:
            from spendgate.gateway import build_gateway

            return build_gateway(
                config,
                source=str(path),
                env=settings.env,
                require_secrets=need_providers,
                base_dir=path.parent,
            )
        except SpendgateError as exc:
            raise failure(str(exc)) from None


def cli_principal() -> Principal:
    """Who a CLI change is audited as: ``cli:<os user>``, an org admin (whoever can run
    the CLI on the database can change everything in it)."""
    import getpass

    from spendgate.domain.roles import Principal, Role

    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = f"uid{os.getuid()}"
    return Principal(f"cli:{user}", Role.ORG_ADMIN)


W = TypeVar("W", bound="Gateway | Workspace")


def run_with_storage(gateway: W, action: Callable[[W], Awaitable[T]]) -> T:
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


class UtcTime(click.ParamType[datetime]):
    """A time as the reports print it (``2026-12-31T18:00:00+00:00``, ``...Z``) or shorter
    (``2026-12-31``, ``2026-12-31T18:00``), read as UTC when it names no zone; the value is
    an aware datetime in UTC. (``click.DateTime`` refused the times the CLI itself prints.)"""

    name = "datetime"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> datetime:
        if isinstance(value, datetime):
            moment = value
        else:
            try:
                moment = datetime.fromisoformat(str(value).strip())
            except ValueError:
                self.fail(
                    f"{value!r} is not a time: give a UTC date or time (2026-12-31, "
                    "2026-12-31T18:00) or one with its zone (2026-12-31T18:00:00+01:00)",
                    param,
                    ctx,
                )
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
