"""``spendgate demo`` (being written)."""

from __future__ import annotations

import click


@click.command()
def demo() -> None:
    """Run the whole product offline: simulated provider, gateway on SQLite, traffic."""
    raise click.ClickException("demo: not yet available")
