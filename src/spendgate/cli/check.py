"""``spendgate check-config``: validate the config the way ``serve`` will, and say what is off."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import click

from spendgate.cli.common import config_option, failure, load, uncollected
from spendgate.config import Config
from spendgate.config.budget_file import mention_rows, row_lines
from spendgate.config.checks import KeyLabels, reference_warnings
from spendgate.domain.roles import weak_admin_token
from spendgate.errors import SpendgateError
from spendgate.gateway import build_parts
from spendgate.storage.open import open_storage
from spendgate.text import escape, plural


@click.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the config file: schema, references, prices and provider secrets."""
    with uncollected():  # as every command's start (a config may list 100,000 budgets)
        config, path, settings = load(config_path)
        try:  # everything `serve` builds from the config, so what it would refuse fails here
            parts = build_parts(
                config,
                source=str(path),
                env=settings.env,
                require_secrets=False,
                base_dir=path.parent,
            )
        except SpendgateError as exc:
            raise failure(str(exc)) from None
    database = _database(config)
    # Like an unset secret, a folder `serve` could not write is this machine's state, not
    # the file's: a warning (exit 0), so a config checked elsewhere (CI) still passes.
    storage_problem = _storage_problem(database) if database is not None else None
    labels, unchecked = _key_labels(config, database)
    prices, table = parts.prices, parts.models
    problems = [f"storage.url: {storage_problem}"] if storage_problem else []
    metrics, server = config.metrics, config.server
    if (
        server.metrics
        and metrics.port
        and metrics.port == server.port
        and (metrics.host or server.host) == server.host
    ):  # the gateway takes the port first: its /metrics listener could never start
        problems.append(
            f"metrics.port: {metrics.port} is server.port too, so `spendgate serve` would "
            "refuse to start (unless --port moves the gateway): choose another port for "
            "metrics.port (the gateway serves /metrics on its own port as well)"
        )
    problems += reference_warnings(config, labels, unchecked)
    for name in table.names():
        route = table.get(name)
        if route is not None and route.price is None:
            problems.append(f"models.{name}: no price (requests will be refused until priced)")
    for name, spec in config.providers.items():
        if spec.api_key_env and not settings.env.get(spec.api_key_env):
            problems.append(
                f"providers.{name}.api_key_env: {spec.api_key_env} is not set in this environment"
            )
    weak = weak_admin_token(settings.env.get(server.admin_token_env), server.admin_token_env)
    if weak is not None:
        problems.append(f"server.admin_token_env: {weak}")
    if config.budgets_file and any("budgets[" in problem for problem in problems):
        # a row of the file is named by its line, as an error is (`located`)
        named = path.parent / config.budgets_file
        lines = row_lines(named)
        first = len(config.budgets) - len(lines)
        problems = [mention_rows(problem, str(named), lines, first) for problem in problems]
    click.echo(
        f"{escape(str(path))}: OK: {plural(len(config.providers), 'provider')}, "
        f"{plural(len(table), 'model')}, {plural(len(config.all_teams()), 'team')} in "
        f"{plural(len(config.orgs), 'org')}, {plural(len(prices), 'priced model')} "
        f"(catalog as of {prices.as_of or 'n/a'})"
    )
    rules = config.routing.rules
    if rules:
        shadow = sum(1 for rule in rules if rule.shadow)
        kinds = ", ".join(
            f"{sum(1 for r in rules if r.kind is kind)} {kind.value}"
            for kind in dict.fromkeys(r.kind for r in rules)
        )
        click.echo(f"routing: {len(rules)} rules ({kinds}; {shadow} in shadow)")
    for problem in problems:
        click.echo(f"warning: {escape(problem)}", err=True)


def _database(config: Config) -> Path | None:
    """The SQLite file ``serve`` will write (the loader made a relative path absolute)."""
    rest = config.storage.url.removeprefix("sqlite:///")
    if rest == config.storage.url or rest in ("", ":memory:"):
        return None
    return Path(rest)


def _storage_problem(database: Path) -> str | None:
    """What ``serve`` would refuse about the database's place: a missing or unwritable
    folder, an unwritable file."""
    folder = database.parent
    if database.is_dir():
        return (
            f"{database} is a folder, not a database file, so `spendgate serve` would refuse "
            f"to start: name a file in it ({database / 'spendgate.db'}) in storage.url"
        )
    if not folder.is_dir():
        return (
            f"the folder {folder} does not exist here, so `spendgate serve` would refuse to "
            f"start: create it (mkdir -p {folder}) or change storage.url"
        )
    if not os.access(folder, os.W_OK | os.X_OK):
        return (
            f"the folder {folder} is not writable by this user, and spendgate writes the "
            "database's -wal and -shm files beside it, so `spendgate serve` would refuse to "
            "start: make it writable or change storage.url"
        )
    if database.exists() and not os.access(database, os.R_OK | os.W_OK):
        return (
            f"{database} is not writable by this user, so `spendgate serve` would refuse to "
            "start: make it writable or change storage.url"
        )
    return None


def _key_labels(config: Config, database: Path | None) -> tuple[KeyLabels | None, str]:
    """What the active keys carry, when the database exists; else None and why not."""
    if database is None or not database.exists():
        return None, f"the database {database or config.storage.url} does not exist yet"

    async def read() -> KeyLabels:
        storage = open_storage(config.storage.url, config=config.storage)
        await storage.open()
        try:
            keys = await storage.list_keys()
        finally:
            await storage.close()
        return KeyLabels(
            users=frozenset(k.user for k in keys if k.user),
            services=frozenset(k.service for k in keys if k.service),
            teams=frozenset(k.team for k in keys if k.team),
            tags=frozenset(tag for k in keys for tag in k.tags),
            keys=frozenset(k.id for k in keys),
        )

    try:
        return asyncio.run(read()), ""
    except SpendgateError as exc:
        return None, f"the database could not be read ({exc})"
