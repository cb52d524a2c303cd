"""Monthly partitions of the ledger: names, bounds, and which to create or drop.

The ledger is range-partitioned on ``ts`` (epoch milliseconds UTC), one partition per
calendar month (UTC) named ``ledger_pYYYYMM``. The gateway creates the current month's and
`PostgresSettings.partitions_ahead` more at start and every hour, and any month a row
needs on demand (a row spooled during a long outage, a test's fixed clock). With
``retention_months`` set, partitions wholly before the first retained month are dropped:
``retention_months = 12`` keeps this month and the eleven before it. Pure: no IO here.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from spendgate.clock import from_ms, to_ms

Month = tuple[int, int]  # (year, month)

_NAME = re.compile(r"^ledger_p(\d{4})(\d{2})$")


def month_of_ms(ts_ms: int) -> Month:
    moment = from_ms(ts_ms)
    return moment.year, moment.month


def month_of(moment: datetime) -> Month:
    return month_of_ms(to_ms(moment))


def shift(month: Month, months: int) -> Month:
    index = month[0] * 12 + (month[1] - 1) + months
    return index // 12, index % 12 + 1


def start_ms(month: Month) -> int:
    return to_ms(datetime(month[0], month[1], 1, tzinfo=UTC))


def name(month: Month) -> str:
    return f"ledger_p{month[0]:04d}{month[1]:02d}"


def parse(table: str) -> Month | None:
    match = _NAME.match(table)
    return None if match is None else (int(match.group(1)), int(match.group(2)))


def create_sql(month: Month) -> str:
    """Statement creating one month's partition (idempotent)."""
    return (
        f"CREATE TABLE IF NOT EXISTS {name(month)} PARTITION OF ledger "
        f"FOR VALUES FROM ({start_ms(month)}) TO ({start_ms(shift(month, 1))})"
    )


def wanted(now: datetime, ahead: int) -> list[Month]:
    """This month and ``ahead`` more."""
    current = month_of(now)
    return [shift(current, i) for i in range(ahead + 1)]


def expired(existing: list[Month], now: datetime, retention_months: int | None) -> list[Month]:
    """The partitions wholly older than the retained months (none without retention)."""
    if retention_months is None:
        return []
    first_kept = shift(month_of(now), -(retention_months - 1))
    return sorted(month for month in existing if month < first_kept)


def first_kept_ms(now: datetime, retention_months: int) -> int:
    return start_ms(shift(month_of(now), -(retention_months - 1)))
