"""``spendgate tokens``: admin tokens with a role (org_admin, team_admin, viewer)."""

from __future__ import annotations

from datetime import UTC, datetime

import click
import orjson

from spendgate.cli.common import (
    cli_principal,
    config_option,
    failure,
    gateway_for,
    run_with_storage,
    table,
)
from spendgate.domain.roles import AdminToken, Role, expiry_after
from spendgate.text import escape

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group()
def tokens() -> None:
    """Manage admin tokens: roles for the admin API (stored hashed; shown only once)."""


def _print(token: AdminToken, now: datetime, as_json: bool, secret: str | None = None) -> None:
    data: dict[str, object] = dict(token.to_json(now))
    if secret:
        data["token"] = secret
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    for name, value in data.items():
        if value is not None:
            click.echo(f"{name:>10}: {escape(str(value))}")
    if secret:
        click.echo("\nStore this token now: spendgate keeps only its hash.", err=True)


def _expiry(expires: str | None, now: datetime) -> datetime | None:
    """``--expires``: a duration from now (``30d``, ``12h``) or a UTC time (ISO 8601)."""
    if expires is None:
        return None
    try:
        return expiry_after(now, expires)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(expires)
    except ValueError:
        raise failure(
            f"--expires {expires!r}: give a duration (30d, 12h, 90m, 2w) or a time "
            "(2026-12-31T18:00)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@tokens.command("create")
@config_option
@click.option("--name", required=True, help="Who holds it (shown in the audit log).")
@click.option(
    "--role",
    required=True,
    type=click.Choice([role.value for role in Role]),
    help="org_admin, team_admin or viewer.",
)
@click.option("--team", default=None, help="A team_admin's team; a viewer limited to one team.")
@click.option("--expires", default=None, help="30d, 12h, 90m, 2w, or a UTC time.")
@json_option
def create(
    config_path: str | None,
    name: str,
    role: str,
    team: str | None,
    expires: str | None,
    as_json: bool,
) -> None:
    """Create an admin token and print its secret once."""
    from spendgate.services.tokens import TokenSpec

    gateway = gateway_for(config_path)
    spec = TokenSpec(
        name=name, role=Role(role), team=team, expires_at=_expiry(expires, gateway.clock.now())
    )
    issued = run_with_storage(gateway, lambda g: g.actions(cli_principal()).create_token(spec))
    _print(issued.token, gateway.clock.now(), as_json, issued.secret)


@tokens.command("list")
@config_option
@json_option
def list_tokens(config_path: str | None, as_json: bool) -> None:
    """List admin tokens (never their secrets), revoked and expired ones included."""
    gateway = gateway_for(config_path)
    found = run_with_storage(gateway, lambda g: g.token_service.list())
    now = gateway.clock.now()
    if as_json:
        shown = [token.to_json(now) for token in found]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
        return
    if not found:
        click.echo("no admin tokens")
        return
    rows = [
        (
            t.id,
            escape(t.name),
            t.role.value,
            escape(t.team or "-"),
            t.state(now),
            t.expires_at.isoformat(timespec="seconds") if t.expires_at else "never",
            escape(t.created_by),
        )
        for t in found
    ]
    click.echo(table(("ID", "NAME", "ROLE", "TEAM", "STATE", "EXPIRES", "CREATED BY"), rows))


@tokens.command("revoke")
@config_option
@click.argument("token_id")
@json_option
def revoke(config_path: str | None, token_id: str, as_json: bool) -> None:
    """Revoke an admin token now."""
    gateway = gateway_for(config_path)
    token = run_with_storage(gateway, lambda g: g.actions(cli_principal()).revoke_token(token_id))
    _print(token, gateway.clock.now(), as_json)
