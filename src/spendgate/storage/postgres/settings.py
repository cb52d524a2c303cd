"""What an operator sets for the PostgreSQL backend (from ``storage:`` in the config)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PostgresSettings:
    pool_min: int = 2  # connections opened at start and kept
    pool_max: int = 20  # connections at most, per gateway process
    connect_timeout_s: float = 5.0  # a connection attempt past this fails (outage policy)
    statement_timeout_s: float = 30.0  # a statement past this fails (outage policy)
    partitions_ahead: int = 2  # monthly ledger partitions created ahead of this month
    retention_months: int | None = None  # months of ledger kept (None: all, forever)
    # False: this gateway's commits return before the server's WAL reaches disk (they
    # survive the gateway's crash, not the server's: like SQLite's synchronous=NORMAL).
    synchronous_commit: bool = True
