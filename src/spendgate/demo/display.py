"""Drawing a `Snapshot`: a rich Live view on a terminal, plain lines anywhere else, and the
closing summary. Pure rendering: the numbers arrive already read from the ledger.

The names shown come from the ledger (``--db`` may name one the demo did not write), so
each is escaped (`spendgate.text.escape`) and never read as rich markup.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from rich import box
from rich.columns import Columns
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from spendgate.demo.guards import Guards, live_line, summary_lines
from spendgate.demo.traffic import TrafficStats
from spendgate.demo.view import Snapshot
from spendgate.domain.budgets import BudgetBook
from spendgate.domain.reports import TopSpenders, format_bp, top_spenders
from spendgate.money import format_dollars
from spendgate.services.reports import UsageReport
from spendgate.text import escape

SERVICE_KEYS = "(service keys)"  # the user group of keys that have no user
LIVE_MIN_ROWS = 2  # the live view shows at least this many users and teams, else no tables
LIVE_MAX_ROWS = 9  # ... and at most this many (the top 8 and the rest), as the summary


def money(amount_nanos: int, places: int = 4) -> str:
    return format_dollars(amount_nanos, places)


def _spend_table(
    report: UsageReport, title: str, label: str, rows: int | None = None, compact: bool = False
) -> Table:
    """The report's top groups (``rows`` of them, when given: the rest summed in one line)."""
    top = report.top if rows is None else _top(report, rows)
    table = Table(
        title=title,
        title_justify="left",
        expand=False,
        pad_edge=False,
        box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD,
        show_edge=not compact,
    )
    table.add_column(label, no_wrap=True)
    for name in ("requests", "tokens", "spend", "share"):
        table.add_column(name, justify="right")
    _add_rows(table, top)
    callers = report.callers
    if callers is not None and callers.services is not None:  # by user: services apart
        services = callers.services
        table.add_row(
            Text(SERVICE_KEYS, style="dim"),
            f"{services.requests:,}",
            f"{services.input_tokens + services.output_tokens:,}",
            money(services.cost_nanos),
            format_bp(callers.services_share_bp),
        )
    return table


def _top(report: UsageReport, rows: int) -> TopSpenders:
    """The top ``rows - 1`` and the rest in one line, or all when they fit in ``rows``."""
    if len(report.groups) <= rows:
        return top_spenders(report.groups, rows)
    return top_spenders(report.groups, max(0, rows - 1))


def _add_rows(table: Table, top: TopSpenders) -> None:
    for ranked in top.top:
        group = ranked.usage
        table.add_row(
            Text(escape(group.group or SERVICE_KEYS)),
            f"{group.requests:,}",
            f"{group.input_tokens + group.output_tokens:,}",
            money(group.cost_nanos),
            format_bp(ranked.share_bp),
        )
    if top.rest_groups:
        rest = top.rest
        table.add_row(
            Text(f"({top.rest_groups} more)", style="dim"),
            f"{rest.requests:,}",
            f"{rest.input_tokens + rest.output_tokens:,}",
            money(rest.cost_nanos),
            format_bp(top.rest_share_bp),
        )


def _headline(snapshot: Snapshot) -> Text:
    return Text.assemble(
        (money(snapshot.total_cost_nanos), "bold green"),
        f"   {snapshot.requests:,} requests   {snapshot.rate:.1f} req/s   "
        f"{snapshot.tokens:,} tokens   {snapshot.errors} errors",
    )


def _pareto_line(snapshot: Snapshot) -> Text:
    pareto = snapshot.pareto()
    if not pareto.users:
        return Text("waiting for the first requests to complete...", style="dim")
    return Text.assemble(
        f"The top {pareto.top} of {pareto.users} users drive ",
        (format_bp(pareto.share_bp), "bold"),
        " of the bill.",
    )


def _tables(snapshot: Snapshot, rows: int | None = None, compact: bool = False) -> Columns:
    """Side by side when the console is wide enough, else one above the other."""
    return Columns(
        [
            _spend_table(snapshot.by_team, "Spend by team", "team", rows, compact),
            _spend_table(snapshot.by_user, "Top users", "user", rows, compact),
        ],
        padding=(0, 3),
    )


def render_live(
    snapshot: Snapshot, gateway_url: str, console: Console | None = None
) -> RenderableType:
    """The live view; with ``console``, cut to fit its height: what was refused comes
    right under the headline, and the tables show as many rows as the screen has room
    for (none, if not even two fit)."""
    title = Text.assemble(
        ("spendgate demo", "bold"),
        f"  gateway {gateway_url}  {snapshot.elapsed_s:5.1f}s / {snapshot.duration_s:g}s  ",
        (snapshot.phase, "cyan"),
    )
    guards = Text(live_line(snapshot.blocks), style="yellow" if snapshot.blocks.blocked else "dim")
    head = (title, _headline(snapshot), guards, _pareto_line(snapshot))
    if console is None:
        return Group(*head, _tables(snapshot))
    height = console.size.height
    most = max(len(snapshot.by_team.groups), len(snapshot.by_user.groups))
    for rows in range(min(LIVE_MAX_ROWS, most), LIVE_MIN_ROWS - 1, -1):
        view = Group(*head, _tables(snapshot, rows, compact=True))
        if len(console.render_lines(view, pad=False)) < height:
            return view
    return Group(*head)


def plain_line(snapshot: Snapshot) -> str:
    """One line per tick when there is no terminal to redraw."""
    teams = ", ".join(
        f"{escape(r.usage.group or '-')} {money(r.usage.cost_nanos)}"
        for r in snapshot.by_team.top.top
    )
    users = ", ".join(
        f"{escape(r.usage.group or SERVICE_KEYS)} {format_bp(r.share_bp)}"
        for r in snapshot.by_user.top.top[:3]
    )
    return (
        f"[{snapshot.elapsed_s:5.1f}s] {snapshot.requests:,} requests, {snapshot.rate:.1f} req/s, "
        f"{snapshot.tokens:,} tokens, {money(snapshot.total_cost_nanos)} | teams: {teams} | "
        f"top users: {users} | refused {snapshot.blocks.blocked:,}"
    )


class Screen:
    """A Live view on a terminal; elsewhere a plain line every ``plain_every_s`` seconds."""

    def __init__(self, console: Console, gateway_url: str, plain_every_s: float) -> None:
        self.console = console
        self.gateway_url = gateway_url
        self.plain_every_s = plain_every_s
        self._live: Live | None = None
        self._next_line_at = plain_every_s

    def __enter__(self) -> Screen:
        if self.console.is_terminal:
            self._live = Live(
                console=self.console,
                auto_refresh=False,
                transient=True,
                vertical_overflow="crop",
            )
            self._live.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._live is not None:
            self._live.stop()

    def show(self, snapshot: Snapshot) -> None:
        if self._live is not None:
            view = render_live(snapshot, self.gateway_url, self.console)
            self._live.update(view, refresh=True)
        elif snapshot.elapsed_s >= self._next_line_at:
            self.console.print(plain_line(snapshot), soft_wrap=True, highlight=False, markup=False)
            self._next_line_at = snapshot.elapsed_s + self.plain_every_s


def print_summary(
    console: Console,
    snapshot: Snapshot,
    stats: TrafficStats,
    guards: Guards,
    book: BudgetBook,
    *,
    sending_s: float,
    interrupted: bool,
    open_chapters: list[str] | None = None,
) -> None:
    """The main chapter's summary; `print_ledgers` follows it (after the routing chapter)."""
    out = console.print
    out()
    ended = _how_it_ended(snapshot, stats, sending_s, interrupted, open_chapters or [])
    out(ended, soft_wrap=True, highlight=False, markup=False)
    out(
        f"Total spend: {money(snapshot.total_cost_nanos, 6)} over {snapshot.requests:,} "
        f"requests and {snapshot.tokens:,} tokens ({snapshot.errors} errors), as the ledger "
        "records it.",
        soft_wrap=True,
        highlight=False,
    )
    out(_tables(snapshot))
    out(_pareto_line(snapshot))
    models = " | ".join(
        f"{escape(str(r.usage.group))} {format_bp(r.share_bp)}" for r in snapshot.by_model.top.top
    )
    out(f"By model: {models}", soft_wrap=True, highlight=False, markup=False)
    out()
    for line in summary_lines(snapshot.blocks, guards, book):
        out(line, soft_wrap=True, highlight=False, markup=False)
    if stats.failed:
        out(f"{stats.failed} calls failed (last: {stats.last_failure}).", soft_wrap=True)
    out()


def print_ledgers(
    console: Console,
    db_path: Path,
    config_path: Path | None,
    routing: tuple[Path, Path | None] | None = None,
    *,
    command: str = "spendgate",
) -> None:
    """Where the ledgers are and how to explore them (``command``: how to call the CLI);
    ``routing``: the routing chapter's ledger and its config."""
    out = console.print
    out(f"Ledger (SQLite): {db_path}", soft_wrap=True, highlight=False)
    for line in explore_commands(db_path, config_path, command):
        out(line, soft_wrap=True, highlight=False, markup=False)
    if routing is None:
        return
    routing_db, routing_config = routing
    out(f"Routing chapter's ledger (SQLite): {routing_db}", soft_wrap=True, highlight=False)
    if routing_config is None:
        return
    config = shlex.quote(str(routing_config))
    for line in (
        f"  {command} savings -c {config} --period all",
        f"  {command} usage -c {config} --by model --period all",
    ):
        out(line, soft_wrap=True, highlight=False, markup=False)


def _how_it_ended(
    snapshot: Snapshot,
    stats: TrafficStats,
    sending_s: float,
    interrupted: bool,
    open_chapters: list[str],
) -> str:
    head = f"spendgate demo: {sending_s:.1f} s of traffic"
    rate = f"{snapshot.rate:.1f} requests/s on average"
    if interrupted:
        return (
            f"{head}, stopped early by Ctrl-C; {rate}. {stats.cut} calls in flight were cut: "
            "the gateway metered each from what it had generated."
        )
    finishing = max(0.0, snapshot.elapsed_s - sending_s)
    ended = (
        f"{head}, then {finishing:.1f} s for the calls in flight and the story's last "
        f"chapters to finish; {rate}."
    )
    if open_chapters:
        ended += (
            f" The story never reached its end for {escape(', '.join(open_chapters))}: "
            "this machine is very slow, or the gateway refused nothing."
        )
    return ended


def explore_commands(
    db_path: Path, config_path: Path | None, command: str = "spendgate"
) -> list[str]:
    if config_path is None:
        return [
            f"Not writing {db_path}.yaml: a file of that name exists and is not the demo's.",
            "Point a config's storage.url at the ledger to explore it with spendgate usage.",
        ]
    config = shlex.quote(str(config_path))
    return [
        "Explore it (the CLI reads storage from a config; this one points at the ledger):",
        f"  {command} usage -c {config} --by user",
        f"  {command} usage -c {config} --by model --period today",
        f"  {command} usage -c {config} --by service --json",
        f"  {command} blocks -c {config} --period all",
        f"  {command} budgets -c {config}",
        f"  {command} keys list -c {config}",
    ]
