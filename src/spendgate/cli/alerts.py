"""``spendgate alerts``: the alert delivery log (what was raised, where it went, how many
attempts, the last error), read from storage as ``GET /admin/alerts`` shows it."""

from __future__ import annotations

import click
import orjson

from spendgate.cli.common import config_option, gateway_for, run_with_storage, table
from spendgate.domain.alerts import DeliveryLog
from spendgate.text import escape

STATUSES = ("pending", "delivered", "failed")


@click.command()
@config_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--status", type=click.Choice(STATUSES), default=None, help="Only these.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as the admin API).")
def alerts(config_path: str | None, limit: int, status: str | None, as_json: bool) -> None:
    """Show the alert delivery log: alerts raised, channel, status, attempts, last error."""
    gateway = gateway_for(config_path)

    async def read(g: object) -> list[DeliveryLog]:
        store = gateway.storage.alert_store
        return await store.log(limit, status) if store is not None else []

    log = run_with_storage(gateway, read)
    if as_json:
        data = [entry.to_json() for entry in log]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_table(log))


def render_table(log: list[DeliveryLog]) -> str:
    if not log:
        return "no alert has been raised"
    rows = [
        (
            str(entry.alert_id),
            entry.created_at.isoformat(timespec="seconds").replace("+00:00", "Z"),
            escape(entry.kind),
            escape(entry.subject),
            escape(entry.member),
            escape(entry.channel),
            entry.status,
            str(entry.attempts),
            escape(entry.last_error or "-")[:60],
        )
        for entry in log
    ]
    header = ("ALERT", "RAISED", "KIND", "SUBJECT", "MEMBER", "CHANNEL", "STATUS", "TRIES", "ERROR")
    return table(header, rows, right={0, 7})
