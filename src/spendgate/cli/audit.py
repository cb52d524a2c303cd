"""``spendgate audit``: every admin change, newest first (a table, JSON or CSV)."""

from __future__ import annotations

from datetime import datetime

import click
import orjson

from spendgate.cli.common import (
    UtcTime,
    at_most_one,
    cli_principal,
    config_option,
    gateway_for,
    run_with_storage,
    table,
)
from spendgate.domain.audit import AuditAction, AuditEntry, to_csv
from spendgate.text import escape


def _change(entry: AuditEntry) -> str:
    """Before -> after, the fields that differ (all of them for a creation)."""
    before, after = entry.before or {}, entry.after or {}
    changed = [k for k in dict.fromkeys([*before, *after]) if before.get(k) != after.get(k)]
    parts = []
    for field in changed:
        old, new = before.get(field), after.get(field)
        text = (
            orjson.dumps(new).decode()
            if field not in before
            else (f"{orjson.dumps(old).decode()} -> {orjson.dumps(new).decode()}")
        )
        parts.append(f"{field}: {text}")
    return "; ".join(parts) or "-"


@click.command()
@config_option
@click.option("--since", type=UtcTime(), default=None, help="From this time (UTC unless zoned).")
@click.option("--until", type=UtcTime(), default=None, help="Before this time (UTC unless zoned).")
@click.option("--actor", default=None, help="Only this actor (as listed: env, cli:<user>, ...).")
@click.option(
    "--action",
    type=click.Choice([a.value for a in AuditAction]),
    default=None,
    help="Only this action.",
)
@click.option("--limit", default=1000, show_default=True, help="At most this many entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as GET /admin/audit).")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV (export).")
def audit(
    config_path: str | None,
    since: datetime | None,
    until: datetime | None,
    actor: str | None,
    action: str | None,
    limit: int,
    as_json: bool,
    as_csv: bool,
) -> None:
    """Every admin change (API and CLI): who, what, when, from what to what."""
    from spendgate.services.audit import audit_query

    at_most_one(("--csv", as_csv), ("--json", as_json))
    params = {
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "actor": actor,
        "action": action,
    }
    values = {name: value for name, value in params.items() if value is not None}
    values["limit"] = str(limit)
    gateway = gateway_for(config_path)

    entries = run_with_storage(
        gateway, lambda g: g.audit_service.entries(audit_query(values), cli_principal())
    )
    if as_json:
        data = [entry.to_json() for entry in entries]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    if as_csv:
        click.echo(to_csv(entries), nl=False)
        return
    if not entries:
        click.echo("no audit entries")
        return
    rows = [
        (
            e.at.isoformat(timespec="seconds"),
            escape(e.actor),
            e.role,
            e.action.value,
            escape(e.target),
            escape(e.team or "-"),
            escape(_change(e)),
        )
        for e in entries
    ]
    click.echo(table(("AT", "ACTOR", "ROLE", "ACTION", "TARGET", "TEAM", "CHANGE"), rows))
