"""``spendgate keys``: create, list, show, update, revoke and rotate virtual keys."""

from __future__ import annotations

from datetime import datetime

import click
import orjson

from spendgate.api.serialize import key_json
from spendgate.cli.common import (
    UtcTime,
    cli_principal,
    config_option,
    failure,
    gateway_for,
    run_with_storage,
    table,
)
from spendgate.domain.identity import ApiKey
from spendgate.domain.key_limits import DEFAULT_PERIOD, KeyLimits
from spendgate.services.keys import KeySpec, KeyUpdate
from spendgate.text import escape


@click.group()
def keys() -> None:
    """Manage virtual keys (stored hashed; a secret is shown only once)."""


def _print_key(key: ApiKey, now: datetime, as_json: bool, secret: str | None = None) -> None:
    data = key_json(key, now)
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
@click.option(
    "--expires", type=UtcTime(), default=None, help="Expiry time (UTC unless a zone is given)."
)
@click.option("--budget-usd", default=None, help="The key's own budget in dollars per --period.")
@click.option("--period", default=None, help="Of --budget-usd (default: monthly).")
@click.option("--requests", default=None, help="The key's own request rates: '60/minute'.")
@click.option("--tokens", default=None, help="The key's own token rates: '200000/hour'.")
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
    budget_usd: str | None,
    period: str | None,
    requests: str | None,
    tokens: str | None,
    as_json: bool,
) -> None:
    """Create a key and print its secret once; with --budget-usd, --requests or --tokens it
    carries a budget and rate limits of its own (stored with it; see `keys update`)."""

    limits = KeyLimits(
        budget_usd=budget_usd, period=period or DEFAULT_PERIOD, requests=requests, tokens=tokens
    )
    spec = KeySpec(
        name=name,
        user=user,
        service=service,
        team=team,
        tags=tags,
        allowed_models=models,
        expires_at=expires,
        limits=limits,
    )
    gateway = gateway_for(config_path)
    issued = run_with_storage(gateway, lambda g: g.actions(cli_principal()).create_key(spec))
    _print_key(issued.key, gateway.clock.now(), as_json, issued.secret)


@keys.command("list")
@config_option
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked keys.")
@json_option
def list_keys(config_path: str | None, include_revoked: bool, as_json: bool) -> None:
    """List keys (never their secrets)."""
    gateway = gateway_for(config_path)
    found = run_with_storage(gateway, lambda g: g.keys.list(include_revoked=include_revoked))
    now = gateway.clock.now()
    if as_json:
        shown = [key_json(k, now) for k in found]
        click.echo(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode())
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
            key.state(now),
            escape(KeyLimits.of(key).describe()),
        )
        for key in found
    ]
    click.echo(table(("ID", "NAME", "TEAM", "SERVICE", "USER", "STATE", "LIMITS"), rows))


@keys.command("show")
@config_option
@click.argument("key_id")
@json_option
def show(config_path: str | None, key_id: str, as_json: bool) -> None:
    """Show one key."""
    gateway = gateway_for(config_path)
    key = run_with_storage(gateway, lambda g: g.keys.get(key_id))
    _print_key(key, gateway.clock.now(), as_json)


@keys.command("revoke")
@config_option
@click.argument("key_id")
@json_option
def revoke(config_path: str | None, key_id: str, as_json: bool) -> None:
    """Revoke a key now."""
    gateway = gateway_for(config_path)
    key = run_with_storage(gateway, lambda g: g.actions(cli_principal()).revoke_key(key_id))
    _print_key(key, gateway.clock.now(), as_json)


@keys.command("rotate")
@config_option
@click.argument("key_id")
@json_option
def rotate(config_path: str | None, key_id: str, as_json: bool) -> None:
    """Issue a new secret for a key; the old one stops working at once."""
    gateway = gateway_for(config_path)
    issued = run_with_storage(gateway, lambda g: g.actions(cli_principal()).rotate_key(key_id))
    _print_key(issued.key, gateway.clock.now(), as_json, issued.secret)


@keys.command("update")
@config_option
@click.argument("key_id")
@click.option("--name", default=None, help="A new label.")
@click.option("--user", default=None, help="A new user ('' clears it).")
@click.option("--service", default=None, help="A new service ('' clears it).")
@click.option("--team", default=None, help="A team declared under orgs ('' clears it).")
@click.option("--tag", "tags", multiple=True, help="Repeatable: replaces every tag.")
@click.option("--clear-tags", is_flag=True, help="Remove every tag.")
@click.option("--model", "models", multiple=True, help="Repeatable: replaces the allowed models.")
@click.option("--all-models", is_flag=True, help="Allow every model again.")
@click.option(
    "--expires", type=UtcTime(), default=None, help="New expiry time (UTC unless a zone is given)."
)
@click.option("--no-expiry", is_flag=True, help="Never expire.")
@click.option("--budget-usd", default=None, help="The key's own budget ('' removes it).")
@click.option("--period", default=None, help="Of the key's own budget.")
@click.option("--requests", default=None, help="The key's own request rates ('' removes them).")
@click.option("--tokens", default=None, help="The key's own token rates ('' removes them).")
@json_option
def update(
    config_path: str | None,
    key_id: str,
    name: str | None,
    user: str | None,
    service: str | None,
    team: str | None,
    tags: tuple[str, ...],
    clear_tags: bool,
    models: tuple[str, ...],
    all_models: bool,
    expires: datetime | None,
    no_expiry: bool,
    budget_usd: str | None,
    period: str | None,
    requests: str | None,
    tokens: str | None,
    as_json: bool,
) -> None:
    """Change a key's labels in place: same id, same secret (nothing to hand out again).
    Requests from now on count under the new labels; the ledger keeps what earlier ones had."""

    if (tags and clear_tags) or (models and all_models) or (expires and no_expiry):
        raise failure("give a new value or clear it, not both")
    named = {"name": name, "user": user, "service": service, "team": team}
    changed = {field for field, value in named.items() if value is not None}
    changed |= {"tags"} if tags or clear_tags else set()
    changed |= {"allowed_models"} if models or all_models else set()
    changed |= {"expires_at"} if expires or no_expiry else set()
    own = {
        "budget_usd": budget_usd,
        "budget_period": period,
        "limit_requests": requests,
        "limit_tokens": tokens,
    }
    changed |= {field for field, value in own.items() if value is not None}
    if not changed:
        raise failure(
            "nothing to change: give --name, --team, --user, --service, --tag, --model, "
            "--expires, --budget-usd, --period, --requests or --tokens (see --help)"
        )
    change = KeyUpdate(
        changed=frozenset(changed),
        name=name or "",
        user=user or None,  # '' clears it
        service=service or None,
        team=team or None,
        tags=tags,
        allowed_models=models,
        expires_at=expires,
        limits=KeyLimits(
            budget_usd=budget_usd or None,  # '' removes it
            period=period or DEFAULT_PERIOD,
            requests=requests or None,
            tokens=tokens or None,
        ),
    )
    gateway = gateway_for(config_path)
    key = run_with_storage(gateway, lambda g: g.actions(cli_principal()).update_key(key_id, change))
    _print_key(key, gateway.clock.now(), as_json)
