"""``spendgate savings``: what routing saved against serving every model as asked."""

from __future__ import annotations

import click
import orjson

from spendgate.cli.common import at_most_one, config_option, gateway_for, run_with_storage
from spendgate.domain.reports import dollars, format_bp
from spendgate.domain.savings import SavingsGroup, ShadowSavings, to_csv
from spendgate.services.savings import SAVINGS_BY_CHOICES, SavingsReport, savings_report
from spendgate.text import escape

_GROUP_HEADER = (
    f"{'REQUESTS':>9} {'COST $':>14} {'ASKED-FOR $':>14} {'SAVED $':>14} {'SAVED':>8} "
    f"{'SPEND-SAVED $':>14} {'SHADOW-SAVES $':>14} {'SHADOW-SPEND $':>14} "
    f"{'ALIAS':>6} {'REWRITE':>8} {'DOWNGRADE':>10} {'FALLBACK':>9}"
)


def _group_line(label: str, g: SavingsGroup) -> str:
    return (
        f"{escape(label):<28} {g.requests:>9} {dollars(g.cost_nanos):>14} "
        f"{dollars(g.counterfactual_nanos):>14} {dollars(g.saved_nanos):>14} "
        f"{format_bp(g.saved_bp):>8} {dollars(g.spend_saved_nanos):>14} "
        f"{dollars(g.shadow_price_saved_nanos):>14} {dollars(g.shadow_spend_saved_nanos):>14} "
        f"{g.aliased:>6} {g.rewritten:>8} {g.downgraded:>10} {g.fell_back:>9}"
    )


def _shadow_line(s: ShadowSavings) -> str:
    return (
        f"{escape(s.rule):<28} {s.requests:>9} {dollars(s.cost_nanos):>14} "
        f"{dollars(s.shadow_cost_nanos):>14} {dollars(s.would_save_nanos):>14} "
        f"{format_bp(s.would_save_bp):>8}"
    )


def _bound_note(label: str, g: SavingsGroup) -> str:
    """What a binding budget means for one group's figures."""
    budgets = ", ".join(escape(b) for b in g.bound_budgets)
    note = (
        f"{escape(label)}: budget {budgets} bound: {g.bound_members} member-window(s) "
        f"refused requests (a member at its limit spends it with or without routing), "
        f"{g.capped_members} would have reached the limit unrouted; "
        f"of ${dollars(g.saved_nanos)} cheaper prices, ${dollars(g.spend_saved_nanos)} is "
        "spend saved (the rest bought more requests)"
    )
    if g.shadow_price_saved_nanos:
        note += (
            f"; shadow rules: of ${dollars(g.shadow_price_saved_nanos)} cheaper prices, "
            f"${dollars(g.shadow_spend_saved_nanos)} of spend"
        )
    return note


def render_table(report: SavingsReport) -> str:
    total = report.savings.total
    by = report.group_by.value
    lines = [
        f"Savings by {by}, {report.since:%Y-%m-%d %H:%M} to {report.until:%Y-%m-%d %H:%M} UTC: "
        f"${dollars(total.saved_nanos)} saved ({format_bp(total.saved_bp)}) of "
        f"${dollars(total.counterfactual_nanos)} over {total.requests} request(s)",
        f"Spend saved within budgets: ${dollars(total.spend_saved_nanos)} "
        f"({format_bp(total.spend_saved_bp)}) of ${dollars(total.capped_counterfactual_nanos)}; "
        f"shadow rules would save ${dollars(total.shadow_spend_saved_nanos)} of spend "
        f"(${dollars(total.shadow_price_saved_nanos)} in price)",
        f"{by.upper():<28} {_GROUP_HEADER}",
        *(_group_line(g.group or "(none)", g) for g in report.savings.groups),
        _group_line("(total)", total),
    ]
    if report.savings.shadow:
        lines.append(
            f"{'SHADOW RULE':<28} {'REQUESTS':>9} {'COST $':>14} {'SHADOW $':>14} "
            f"{'WOULD SAVE $':>14} {'SHARE':>8}"
        )
        lines.extend(_shadow_line(s) for s in report.savings.shadow)
    lines.extend(
        _bound_note(g.group or "(none)", g) for g in report.savings.groups if g.budget_bound
    )
    return "\n".join(lines)


@click.command()
@config_option
@click.option(
    "--by", "group_by", type=click.Choice(SAVINGS_BY_CHOICES), default="team", show_default=True
)
@click.option("--period", default="month", show_default=True, help="As for `spendgate usage`.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (same as the admin API).")
@click.option("--csv", "as_csv", is_flag=True, help="Print the groups as CSV.")
def savings(
    config_path: str | None, group_by: str, period: str, as_json: bool, as_csv: bool
) -> None:
    """What routing saved against serving every request the model it asked for: in price,
    and in spend where budgets bind."""
    at_most_one(("--csv", as_csv), ("--json", as_json))
    gateway = gateway_for(config_path)
    report = run_with_storage(
        gateway,
        lambda g: savings_report(
            g.storage, g.clock, group_by=group_by, period=period, book=g.budgets
        ),
    )
    if as_csv:
        click.echo(to_csv(report.savings.groups), nl=False)
    elif as_json:
        click.echo(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        click.echo(render_table(report))
