"""``spendgate budgets``: see every budget's spend, and adjust limits at run time."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import click
import orjson

from spendgate.cli.common import (
    UtcTime,
    cli_principal,
    config_option,
    gateway_for,
    run_with_storage,
    table,
)
from spendgate.text import escape

if TYPE_CHECKING:
    from spendgate.cli.common import Workspace
    from spendgate.services.budgets import BudgetView


@click.group(invoke_without_command=True)
@config_option
@click.option("--name", default=None, help="Only this budget.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as the admin API).")
@click.pass_context
def budgets(ctx: click.Context, config_path: str | None, name: str | None, as_json: bool) -> None:
    """Show budgets: spent, reserved, remaining and next reset (the default action)."""
    if ctx.invoked_subcommand is not None:
        return
    gateway = gateway_for(config_path)

    async def read(g: Workspace) -> tuple[list[BudgetView], list[dict[str, object]]]:
        from spendgate.services.forecasts import burn_window, views_json

        views = await g.budget_service.overview(name)
        window = burn_window(g.config.alerts.burn_window_s)
        return views, await views_json(g.storage, views, g.clock.now(), window)

    views, data = run_with_storage(gateway, read)
    if as_json:
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    if not views and not gateway.budgets.budgets:  # nor has a key a budget of its own
        click.echo(
            "no budget is configured: none under budgets: or limits: in the config, and no "
            "key has a budget of its own (docs/budgets.md)"
        )
        return
    click.echo(render_table(views, data))


HEADER = ("BUDGET", "MEMBER", "PERIOD", "SPENT", "RESERVED", "LIMIT", "USED", "STATE", "OVER")
FORECAST = ("BURN/H", "FORECAST", "CAP AT")


def render_table(views: list[BudgetView], forecasts: list[dict[str, object]] | None = None) -> str:
    """One line per budget member; budget and member in full (`spendgate.cli.common.table`)
    so either pastes into ``set-limit`` or ``reset --member``. With ``forecasts`` (each
    view's JSON with its forecast): the burn rate, the spend projected at the period's end
    and when the limit is reached at that rate."""
    if not views:
        return "no budget has a counter yet (budgets with match '*' appear once used)"
    rows = []
    for index, view in enumerate(views):
        data = view.to_json()
        shown = data["display"]
        assert isinstance(shown, dict)
        resets = data["resets_at"] or "never"
        override = " (override)" if view.override else ""
        rows.append(
            (
                escape(view.budget.name),
                escape(view.member),
                escape(str(view.budget.period)),
                str(shown["spent"]),
                str(shown["reserved"]),
                str(shown["limit"]),
                f"{view.state.used_bp / 100:.1f}%",
                view.condition,
                str(view.overruns),
                f"{resets}{override}",
                *(_forecast_cells(forecasts[index]) if forecasts is not None else ()),
            )
        )
    extra = FORECAST if forecasts is not None else ()
    return table((*HEADER, "RESETS", *extra), rows, right={3, 4, 5, 6, 8, 10, 11})


def _forecast_cells(data: dict[str, object]) -> tuple[str, str, str]:
    found = data.get("forecast")
    if not isinstance(found, dict):
        return ("-", "-", "-")
    shown = found["display"]
    assert isinstance(shown, dict)
    cap_at = found.get("cap_at")
    return (
        str(shown["burn_per_hour"]),
        str(shown["projected"] or "-"),
        str(cap_at)[:16].replace("T", " ") if cap_at else "never",
    )


@budgets.command("set-limit")
@config_option
@click.argument("name")
@click.argument("limit")
@click.option(
    "--until",
    type=UtcTime(),
    default=None,
    help="Expiry of the change (UTC unless a zone is given).",
)
def set_limit(config_path: str | None, name: str, limit: str, until: datetime | None) -> None:
    """Change a budget's limit at run time (dollars or tokens, per its unit)."""
    gateway = gateway_for(config_path)
    expires = until
    override = run_with_storage(
        gateway, lambda g: g.actions(cli_principal()).set_limit(name, limit, expires)
    )
    when = f" until {override.expires_at.isoformat()}" if override.expires_at else ""
    click.echo(f"{escape(name)}: limit set to {escape(limit)}{when}")


@budgets.command("clear-limit")
@config_option
@click.argument("name")
def clear_limit(config_path: str | None, name: str) -> None:
    """Drop run-time limit changes: back to the configured limit."""
    gateway = gateway_for(config_path)
    cleared = run_with_storage(gateway, lambda g: g.actions(cli_principal()).clear_limit(name))
    click.echo(f"{escape(name)}: {cleared} override(s) cleared")


@budgets.command("reset")
@config_option
@click.argument("name")
@click.option("--member", default=None, help="Only this member (default: all).")
def reset(config_path: str | None, name: str, member: str | None) -> None:
    """Forgive the current window's spend (the ledger keeps every row)."""
    gateway = gateway_for(config_path)
    count = run_with_storage(
        gateway, lambda g: g.actions(cli_principal()).reset_budget(name, member)
    )
    click.echo(f"{escape(name)}: {count} counter(s) reset")
