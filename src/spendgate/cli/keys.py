"""``spendgate keys``: create, list, show, revoke and rotate virtual keys."""

from __future__ import annotations

from datetime import datetime

import click
import orjson

from spendgate.api.serialize import key_json
from spendgate.cli.common import config_option, gateway_for, run_with_storage, table
from spendgate.domain.identity import ApiKey
from spendgate.services.keys import KeySpec
from spendgate.text import escape


@click.group()
def keys() -> None:
    """Manage virtual keys (stored hashed; a secret is shown only once)."""


def _print_key(key: ApiKey, as_json: bool, secret: str | None = None) -> None:
    data = key_json(key)
    if secret:
        data["key"] = secret
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    for name, value in data.items():
        if value not in (None, [], ""):
            shown = ", ".join(value) if isinstance(value, list) else value
            click.echo(f"{name:>15}: {escape(shown)}")
    if secret:
        click.echo("\nStore this key now: spendgate keeps only its hash.", err=True)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@keys.command("create")
@config_option
@click.option("--name", required=True, help="A label for the key.")
@click.option("--user", default=None)
@click.option("--service", default=None, help="The calling application.")
@click.option("--team", default=None, help="A team declared under orgs in the config.")
@click.option("--tag", "tags", multiple=True, help="Repeatable.")
@click.option("--model", "models", multiple=True, help="Allowed model or glob; repeatable.")
@click.option("--expires", type=click.DateTime(), default=None, help="Expiry time (UTC).")
@json_option
def create(
    config_path: str | None,
    name: str,
    user: str | None,
    service: str | None,
    team: str | None,
    tags: tuple[str, ...],
    models: tuple[str, ...],
    expires: datetime | None,
    as_json: bool,
) -> None:
    """Create a key and print its secret once."""
    from datetime import UTC

    spec = KeySpec(
        name=name,
        user=user,
        service=service,
        team=team,
        tags=tags,
        allowed_models=models,
        expires_at=expires.replace(tzinfo=UTC) if expires else None,
    )
    gateway = gateway_for(config_path)
    issued = run_with_storage(gateway, lambda g: g.keys.create(spec))
    _print_key(issued.key, as_json, issued.secret)


@keys.command("list")
@config_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@json_option
def list_keys(config_path: str | None, include_revoked: bool, as_json: bool) -> None:
    """List keys (never their secrets)."""
    gateway = gateway_for(config_path)
    found = run_with_storage(gateway, lambda g: g.keys.list(include_revoked=include_revoked))
    if as_json:
        click.echo(orjson.dumps([key_json(k) for k in found], option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no keys")
        return
    # every cell in full: a team, service or user pastes into `budgets reset --member`
    rows = [
        (
            key.id,
            escape(key.name),
            escape(key.team or "-"),
            escape(key.service or "-"),
            escape(key.user or "-"),
            "revoked" if key.revoked_at else "active",
        )
        for key in found
    ]
    click.echo(table(("ID", "NAME", "TEAM", "SERVICE", "USER", "STATE"), rows))


@keys.command("show")
@config_option
@click.argument("key_id")
@json_option
def show(config_path: str | None, key_id: str, as_json: bool) -> None:
    """Show one key."""
    gateway = gateway_for(config_path)
    _print_key(run_with_storage(gateway, lambda g: g.keys.get(key_id)), as_json)


@keys.command("revoke")
@config_option
@click.argument("key_id")
@json_option
def revoke(config_path: str | None, key_id: str, as_json: bool) -> None:
    """Revoke a key now."""
    gateway = gateway_for(config_path)
    _print_key(run_with_storage(gateway, lambda g: g.keys.revoke(key_id)), as_json)


@keys.command("rotate")
@config_option
@click.argument("key_id")
@json_option
def rotate(config_path: str | None, key_id: str, as_json: bool) -> None:
    """Issue a new secret for a key; the old one stops working at once."""
    gateway = gateway_for(config_path)
    issued = run_with_storage(gateway, lambda g: g.keys.rotate(key_id))
    _print_key(issued.key, as_json, issued.secret)
