"""``spendgate loops``: the loops spendgate detected and blocks, and releasing one."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import click
import orjson

from spendgate.cli.common import cli_principal, config_option, gateway_for, run_with_storage
from spendgate.domain.loops import LoopBlock
from spendgate.text import escape


@click.group(invoke_without_command=True)
@config_option
@click.option("--all", "ended", is_flag=True, help="Also loops whose block ended (strikes kept).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (as the admin API).")
@click.pass_context
def loops(ctx: click.Context, config_path: str | None, ended: bool, as_json: bool) -> None:
    """Show detected loops: key, model, strikes and until when each is blocked (the
    default action)."""
    if ctx.invoked_subcommand is not None:
        return
    gateway = gateway_for(config_path)
    service = gateway.loop_service
    blocks = run_with_storage(gateway, lambda g: g.loop_service.blocks(ended=ended))
    now = gateway.clock.now()
    if as_json:
        data = [block.to_json(now, enforced=service.enforces(block)) for block in blocks]
        click.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_table(blocks, now, enforces=service.enforces))


def render_table(
    blocks: list[LoopBlock], now: datetime, *, enforces: Callable[[LoopBlock], bool]
) -> str:
    """Ids and keys in full: they are what `loops release` and `keys` take. A block the
    config no longer enforces says so where its time left would be."""
    if not blocks:
        return "no loop is blocked"
    rows = [
        (
            block.id,
            escape(block.key_id),
            "(whole key)" if block.key_wide else escape(block.model),
            str(block.strikes),
            block.until.astimezone(UTC).isoformat(timespec="seconds"),
            _left(block, now) if enforces(block) else "not enforced",
        )
        for block in blocks
    ]
    header = ("ID", "KEY", "MODEL", "STRIKES", "BLOCKED UNTIL (UTC)", "LEFT")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    )


def _left(block: LoopBlock, now: datetime) -> str:
    seconds = (block.until - now).total_seconds()
    return "ended" if seconds <= 0 else f"{seconds:.0f} s"


@loops.command("release")
@config_option
@click.argument("loop_id")
def release(config_path: str | None, loop_id: str) -> None:
    """Unblock a detected loop now and forget its strikes (ID from `spendgate loops`)."""
    gateway = gateway_for(config_path)
    block = run_with_storage(gateway, lambda g: g.actions(cli_principal()).release_loop(loop_id))
    click.echo(
        f"loop {block.id} released: key {escape(block.key_id)}, model {escape(block.model)}, "
        f"{block.strikes} strike(s) forgotten"
    )
