"""``spendgate usage``: who spends what, and the few who drive most of the bill."""

from __future__ import annotations

import click
import orjson

from spendgate.cli.common import config_option, gateway_for, run_with_storage
from spendgate.domain.reports import dollars, format_bp, to_csv
from spendgate.services.reports import (
    GROUP_BY_CHOICES,
    UsageReport,
    blocks_report,
    usage_report,
)
from spendgate.text import escape


def render_table(report: UsageReport) -> str:
    lines = [
        f"Spend by {report.group_by.value}, {report.since:%Y-%m-%d %H:%M} to "
        f"{report.until:%Y-%m-%d %H:%M} UTC: ${dollars(report.top.total_cost_nanos)} "
        f"over {report.top.total_groups} {report.group_by.value}(s)",
        f"{'#':>3} {report.group_by.value.upper():<28} {'REQUESTS':>9} {'INPUT':>11} "
        f"{'OUTPUT':>10} {'COST $':>14} {'SHARE':>8} {'BLOCKED':>8}",
    ]
    for ranked in report.top.top:
        g = ranked.usage
        lines.append(
            f"{ranked.rank:>3} {escape(g.group or '(none)')[:28]:<28} {g.requests:>9} "
            f"{g.input_tokens:>11} {g.output_tokens:>10} {dollars(g.cost_nanos):>14} "
            f"{format_bp(ranked.share_bp):>8} {g.blocked:>8}"
        )
    if report.top.rest_groups:
        rest = report.top.rest
        lines.append(
            f"{'':>3} {f'(other {report.top.rest_groups})':<28} {rest.requests:>9} "
            f"{rest.input_tokens:>11} {rest.output_tokens:>10} {dollars(rest.cost_nanos):>14} "
            f"{format_bp(report.top.rest_share_bp):>8} {rest.blocked:>8}"
        )
    if report.top.top:
        lines.append(
            f"Top {len(report.top.top)} account for {format_bp(report.top.top_share_bp)} "
            "of the spend."
        )
    return "\n".join(lines)


@click.command()
@config_option
@click.option(
    "--by", "group_by", type=click.Choice(GROUP_BY_CHOICES), default="team", show_default=True
)
@click.option(
    "--period",
    default="month",
    show_default=True,
    help="today, yesterday, month, all, 24h, 7d, 2w, or YYYY-MM-DD..YYYY-MM-DD.",
)
@click.option("--top", default=15, show_default=True, help="How many top spenders to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as the admin API).")
@click.option("--csv", "as_csv", is_flag=True, help="Print every group as CSV.")
def usage(
    config_path: str | None, group_by: str, period: str, top: int, as_json: bool, as_csv: bool
) -> None:
    """Spend grouped by team, service, user, key, model, org or provider."""
    gateway = gateway_for(config_path)
    report = run_with_storage(
        gateway,
        lambda g: usage_report(g.storage, g.clock, group_by=group_by, period=period, top=top),
    )
    if as_csv:
        click.echo(to_csv(report.groups), nl=False)
    elif as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_table(report))


@click.command()
@config_option
@click.option("--period", default="today", show_default=True, help="As for `spendgate usage`.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as the admin API).")
def blocks(config_path: str | None, period: str, as_json: bool) -> None:
    """What budgets, limits, loop detection and breakers refused, and what it saved."""
    gateway = gateway_for(config_path)
    report = run_with_storage(gateway, lambda g: blocks_report(g.storage, g.clock, period=period))
    if as_json:
        click.echo(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return
    rows = report["data"]
    assert isinstance(rows, list)
    click.echo(
        f"Refused {report['blocked']} request(s) worth up to ${report['blocked_would_cost_usd']} "
        f"since {report['since']}"
    )
    if report["overruns"]:
        click.echo(f"{report['overruns']} request(s) charged more than they had reserved")
    # the name in full: it pastes into `spendgate budgets set-limit`
    wide = max([32, *(len(escape(str(row["name"]))) for row in rows)])
    click.echo(
        f"{'BY':<{wide}} {'BLOCKED':>8} {'RETRYABLE':>9} {'WOULD COST $':>14} {'SHADOW HITS':>12} "
        f"{'SHADOW $':>14} {'OVERRUNS':>8} {'OVERRUN $':>14}"
    )
    for row in rows:
        click.echo(
            f"{escape(str(row['name'])):<{wide}} {row['blocked']:>8} {row['retryable']:>9} "
            f"{row['blocked_would_cost_usd']:>14} {row['shadow_hits']:>12} "
            f"{row['shadow_cost_usd']:>14} {row['overruns']:>8} {row['overrun_cost_usd']:>14}"
        )
