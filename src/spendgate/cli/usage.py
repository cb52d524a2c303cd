"""``spendgate usage``: who spends what, and the few who drive most of the bill."""

from __future__ import annotations

import click
import orjson

from spendgate.cli.common import at_most_one, config_option, gateway_for, run_with_storage
from spendgate.domain.reports import Callers, dollars, format_bp, to_csv
from spendgate.services.reports import (
    GROUP_BY_CHOICES,
    UsageReport,
    blocks_report,
    series_csv,
    usage_report,
    usage_series_report,
)
from spendgate.text import escape, plural


def _headline(report: UsageReport) -> str:
    span = f"{report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC"
    callers = report.callers
    if callers is None:
        return (
            f"Spend by {report.group_by.value}, {span}: ${dollars(report.top.total_cost_nanos)} "
            f"over {report.top.total_groups} {report.group_by.value}(s)"
        )
    services = callers.services.cost_nanos if callers.services else 0
    return (
        f"Spend by user, {span}: ${dollars(callers.cost_nanos)} over {callers.count} "
        f"caller(s): ${dollars(callers.users_cost_nanos)} over {callers.users} user(s), "
        f"${dollars(services)} over {callers.service_keys} service key(s) (keys without a "
        "user; shares: a user's of the users' spend, the services' of every caller's)"
    )


def render_table(report: UsageReport) -> str:
    # every name in full (it pastes into `--name`, `reset --member`...): the column is as
    # wide as the widest
    labels = [escape(ranked.usage.group or "(none)") for ranked in report.top.top]
    extra = [f"(other {report.top.rest_groups})"] if report.top.rest_groups else []
    if report.callers is not None and report.callers.services is not None:
        extra.append(f"(services: {report.callers.service_keys} key(s))")
    wide = max([28, *(len(label) for label in labels + extra)])
    lines = [
        _headline(report),
        f"{'#':>3} {report.group_by.value.upper():<{wide}} {'REQUESTS':>9} {'INPUT':>11} "
        f"{'OUTPUT':>10} {'COST $':>14} {'SHARE':>8} {'BLOCKED':>8}",
    ]
    for ranked, label in zip(report.top.top, labels, strict=True):
        g = ranked.usage
        lines.append(
            f"{ranked.rank:>3} {label:<{wide}} {g.requests:>9} "
            f"{g.input_tokens:>11} {g.output_tokens:>10} {dollars(g.cost_nanos):>14} "
            f"{format_bp(ranked.share_bp):>8} {g.blocked:>8}"
        )
    if report.top.rest_groups:
        rest = report.top.rest
        lines.append(
            f"{'':>3} {f'(other {report.top.rest_groups})':<{wide}} {rest.requests:>9} "
            f"{rest.input_tokens:>11} {rest.output_tokens:>10} {dollars(rest.cost_nanos):>14} "
            f"{format_bp(report.top.rest_share_bp):>8} {rest.blocked:>8}"
        )
    callers = report.callers
    if callers is not None:
        return "\n".join(lines + _callers_lines(report, callers, wide))
    if report.top.top:
        shown = len(report.top.top)
        lines.append(
            f"Top {shown} {'accounts' if shown == 1 else 'account'} for "
            f"{format_bp(report.top.top_share_bp)} of the spend."
        )
    return "\n".join(lines)


def _callers_lines(report: UsageReport, callers: Callers, wide: int) -> list[str]:
    """``--by user``: the services line apart from the users' ranking, and the top N's
    share of the users' spend and of every caller's."""
    lines = []
    services = callers.services
    if services is not None:
        label = f"(services: {callers.service_keys} key(s))"
        lines.append(
            f"{'':>3} {label:<{wide}} {services.requests:>9} {services.input_tokens:>11} "
            f"{services.output_tokens:>10} {dollars(services.cost_nanos):>14} "
            f"{format_bp(callers.services_share_bp):>8} {services.blocked:>8}"
        )
    if report.top.top:
        lines.append(
            f"Top {len(report.top.top)} of {plural(callers.users, 'user')} "
            f"{'accounts' if len(report.top.top) == 1 else 'account'} for "
            f"{format_bp(report.top.top_share_bp)} of the users' spend "
            f"(${dollars(callers.users_cost_nanos)}); of all {callers.count} callers "
            f"({callers.users} users, {callers.service_keys} service key(s)), for "
            f"{format_bp(callers.top_share_bp)} of ${dollars(callers.cost_nanos)}."
        )
    return lines


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
@click.option("--by-hour", is_flag=True, help="A time series instead: per UTC hour and group.")
@click.option("--by-day", is_flag=True, help="A time series per UTC day and group.")
def usage(
    config_path: str | None,
    group_by: str,
    period: str,
    top: int,
    as_json: bool,
    as_csv: bool,
    by_hour: bool,
    by_day: bool,
) -> None:
    """Spend grouped by team, service, user, key, model, org or provider."""
    at_most_one(("--csv", as_csv), ("--json", as_json))
    at_most_one(("--by-hour", by_hour), ("--by-day", by_day))
    bucket = "hour" if by_hour else "day" if by_day else None
    gateway = gateway_for(config_path)
    if bucket is not None:
        series = run_with_storage(
            gateway,
            lambda g: usage_series_report(
                g.storage, g.clock, group_by=group_by, period=period, bucket=bucket
            ),
        )
        if as_csv:
            click.echo(series_csv(series), nl=False)
        elif as_json:
            click.echo(orjson.dumps(series, option=orjson.OPT_INDENT_2).decode())
        else:
            click.echo(render_series(series))
        return
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


def render_series(series: dict[str, object]) -> str:
    points = series["series"]
    assert isinstance(points, list)
    wide = max([16, *(len(escape(str(p["group"] or "-"))) for p in points)])
    lines = [
        f"Usage per {series['bucket']} by {series['group_by']}, "
        f"{series['since']} to {series['until']} (buckets in UTC)",
        f"{'START':<20} {str(series['group_by']).upper():<{wide}} {'COST $':>16} "
        f"{'REQUESTS':>9} {'BLOCKED':>8} {'INPUT':>12} {'OUTPUT':>12}",
    ]
    for p in points:
        lines.append(
            f"{p['start']:<20} {escape(str(p['group'] or '-')):<{wide}} {p['cost_usd']:>16} "
            f"{p['requests']:>9} {p['blocked']:>8} {p['input_tokens']:>12} "
            f"{p['output_tokens']:>12}"
        )
    return "\n".join(lines)


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
    click.echo(render_blocks(report))


def render_blocks(report: dict[str, object]) -> str:
    rows = report["data"]
    assert isinstance(rows, list)
    lines = [
        f"Refused {report['requests']} distinct request(s) ({report['blocked']} refusal(s), "
        f"retries included) since {report['since']}: about ${report['estimate_usd']} at their "
        f"real input rate and typical output; worst case ${report['requests_worst_case_usd']} "
        f"(${report['blocked_would_cost_usd']} over every refusal)"
    ]
    if report["overruns"]:
        lines.append(f"{report['overruns']} request(s) charged more than they had reserved")
    # the name in full: it pastes into `spendgate budgets set-limit`
    wide = max([32, *(len(escape(str(row["name"]))) for row in rows)])
    lines.append(
        f"{'BY':<{wide}} {'BLOCKED':>8} {'REQUESTS':>8} {'RETRYABLE':>9} {'ESTIMATE $':>14} "
        f"{'WORST CASE $':>14} {'SHADOW HITS':>12} {'SHADOW $':>14} {'OVERRUNS':>8} "
        f"{'OVERRUN $':>14}"
    )
    for row in rows:
        lines.append(
            f"{escape(str(row['name'])):<{wide}} {row['blocked']:>8} {row['requests']:>8} "
            f"{row['retryable']:>9} {row['estimate_usd']:>14} "
            f"{row['blocked_would_cost_usd']:>14} {row['shadow_hits']:>12} "
            f"{row['shadow_cost_usd']:>14} {row['overruns']:>8} {row['overrun_cost_usd']:>14}"
        )
    return "\n".join(lines)
