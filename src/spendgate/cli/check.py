"""``spendgate check-config``: validate the config the way ``serve`` will, and say what is off."""

from __future__ import annotations

import click

from spendgate.cli.common import config_option, failure, load
from spendgate.errors import SpendgateError
from spendgate.gateway import build_parts
from spendgate.text import escape, plural


@click.command("check-config")
@config_option
def check_config(config_path: str | None) -> None:
    """Validate the config file: schema, references, prices and provider secrets."""
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
    prices, table = parts.prices, parts.models
    problems = []
    for name in table.names():
        route = table.get(name)
        if route is not None and route.price is None:
            problems.append(f"models.{name}: no price (requests will be refused until priced)")
    for name, spec in config.providers.items():
        if spec.api_key_env and not settings.env.get(spec.api_key_env):
            problems.append(
                f"providers.{name}.api_key_env: {spec.api_key_env} is not set in this environment"
            )
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
