"""Spend reports over usage totals: who drives the bill, and over which period. No IO.

The seed's story is that "about 15 developers drive most of the usage"; `top_spenders`
answers exactly that: the top N groups, each one's share of the total cost, the share of
the top N together, and what the rest add up to.

Shares are integers in basis points (1 bp = 0.01 %), computed from integer nano-dollars
and rounded half up, so no float decides anything and a report reads the same on every
machine. Each share is rounded on its own (the top N's share is computed from the summed
nanos, not by adding rounded shares), so displayed shares may add up to 1 bp off 100 %.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from spendgate.domain.totals import UsageGroup
from spendgate.money import nanos_to_decimal
from spendgate.text import csv_cell

BASIS_POINTS = 10_000

_USAGE_FIELDS = (
    "requests",
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)


def share_bp(part: int, total: int) -> int:
    """``part / total`` in basis points, rounded half up; 0 when there is no total."""
    if total <= 0:
        return 0
    return (2 * part * BASIS_POINTS + total) // (2 * total)


def format_bp(bp: int) -> str:
    """``7342`` -> ``"73.42%"``: display only, from the exact integer."""
    sign = "-" if bp < 0 else ""
    whole, cents = divmod(abs(bp), 100)
    return f"{sign}{whole}.{cents:02d}%"


def dollars(amount_nanos: int) -> str:
    """Nano-dollars as a plain dollar string with all 9 decimals: ``"0.001234500"``."""
    return f"{nanos_to_decimal(amount_nanos):.9f}"


@dataclass(frozen=True, slots=True)
class RankedGroup:
    rank: int  # 1 = biggest spender
    usage: UsageGroup
    share_bp: int  # of the report's total cost


@dataclass(frozen=True, slots=True)
class TopSpenders:
    top: tuple[RankedGroup, ...]
    rest: UsageGroup  # every group after the top N, summed; its ``group`` is None
    rest_groups: int
    total_cost_nanos: int
    top_share_bp: int
    rest_share_bp: int

    @property
    def total_groups(self) -> int:
        return len(self.top) + self.rest_groups


def _ranking_key(group: UsageGroup) -> tuple[int, bool, str]:
    """Highest cost first; ties by name, the unattributed (None) group last."""
    return (-group.cost_nanos, group.group is None, group.group or "")


def sum_groups(groups: Sequence[UsageGroup], label: str | None = None) -> UsageGroup:
    """Field-by-field sum of usage groups, under ``label``."""
    return UsageGroup(
        group=label,
        requests=sum(g.requests for g in groups),
        input_tokens=sum(g.input_tokens for g in groups),
        cached_input_tokens=sum(g.cached_input_tokens for g in groups),
        cache_write_tokens=sum(g.cache_write_tokens for g in groups),
        output_tokens=sum(g.output_tokens for g in groups),
        reasoning_tokens=sum(g.reasoning_tokens for g in groups),
        cost_nanos=sum(g.cost_nanos for g in groups),
        errors=sum(g.errors for g in groups),
        estimated=sum(g.estimated for g in groups),
        blocked=sum(g.blocked for g in groups),
        blocked_would_cost_nanos=sum(g.blocked_would_cost_nanos for g in groups),
        retries=sum(g.retries for g in groups),
        retry_cost_nanos=sum(g.retry_cost_nanos for g in groups),
    )


def top_spenders(groups: Sequence[UsageGroup], n: int) -> TopSpenders:
    """The N biggest groups by cost and their shares; input order does not matter."""
    if n < 0:
        raise ValueError(f"top N must be 0 or more, got {n}")
    ranked = sorted(groups, key=_ranking_key)
    head, tail = ranked[:n], ranked[n:]
    total = sum(g.cost_nanos for g in ranked)
    top_cost = sum(g.cost_nanos for g in head)
    rest = sum_groups(tail)
    return TopSpenders(
        top=tuple(
            RankedGroup(rank, g, share_bp(g.cost_nanos, total))
            for rank, g in enumerate(head, start=1)
        ),
        rest=rest,
        rest_groups=len(tail),
        total_cost_nanos=total,
        top_share_bp=share_bp(top_cost, total),
        rest_share_bp=share_bp(rest.cost_nanos, total),
    )


@dataclass(frozen=True, slots=True)
class Callers:
    """``usage --by user``: users are ranked among themselves; traffic of keys without a
    user (services) is one line apart, and the top N users' share is stated of the users'
    spend (`TopSpenders.top_share_bp`) and of every caller's (``top_share_bp`` here)."""

    users: int  # users with traffic
    users_cost_nanos: int
    services: UsageGroup | None  # keys without a user, summed (None: there were none)
    service_keys: int  # how many such keys sent traffic
    cost_nanos: int  # every caller: users and services
    top_share_bp: int  # the top N users' share of every caller's spend
    services_share_bp: int

    @property
    def count(self) -> int:
        return self.users + self.service_keys


def rank_users(
    groups: Sequence[UsageGroup], n: int, service_keys: int
) -> tuple[TopSpenders, Callers]:
    """The top N users among users only, and the figures over every caller. ``groups``
    are per user, the group None holding every key without a user; ``service_keys``:
    how many such keys sent traffic."""
    users = [g for g in groups if g.group is not None]
    services = next((g for g in groups if g.group is None), None)
    ranked = top_spenders(users, n)
    everyone = sum(g.cost_nanos for g in groups)
    top_cost = sum(r.usage.cost_nanos for r in ranked.top)
    return ranked, Callers(
        users=len(users),
        users_cost_nanos=ranked.total_cost_nanos,
        services=services,
        service_keys=service_keys if services is not None else 0,
        cost_nanos=everyone,
        top_share_bp=share_bp(top_cost, everyone),
        services_share_bp=share_bp(services.cost_nanos if services else 0, everyone),
    )


def callers_json(report: TopSpenders, callers: Callers) -> dict[str, object]:
    """`to_json` of the users' ranking, with the services line and the figures over every
    caller; ``total_cost_nanos`` and ``total_groups`` stay the whole report's."""
    body = to_json(report)
    services = None
    if callers.services is not None:
        services = _group_json(callers.services)
        del services["group"]
        services.update(keys=callers.service_keys, share_bp=callers.services_share_bp)
    body.update(
        total_cost_nanos=callers.cost_nanos,
        total_cost_usd=dollars(callers.cost_nanos),
        total_groups=callers.users + (callers.services is not None),
        users={
            "count": callers.users,
            "cost_nanos": callers.users_cost_nanos,
            "cost_usd": dollars(callers.users_cost_nanos),
            "top_share_bp": report.top_share_bp,
        },
        services=services,
        callers={
            "count": callers.count,
            "cost_nanos": callers.cost_nanos,
            "cost_usd": dollars(callers.cost_nanos),
            "top_share_bp": callers.top_share_bp,
        },
    )
    return body


# ---------------------------------------------------------------------------- export

CSV_HEADER = (
    "group",
    *_USAGE_FIELDS,
    "cost_usd",
    "errors",
    "estimated",
    "blocked",
    "blocked_would_cost_usd",
    "retries",
    "retry_cost_usd",
)


def to_csv(groups: Sequence[UsageGroup]) -> str:
    """Header plus one line per group, in the given order; cost in dollars, 9 decimals.

    The unattributed group (None) is an empty cell; a group name a spreadsheet would run as
    a formula (``=HYPERLINK(...)``, ``+1``, ``-1``, ``@SUM``) starts with a single quote
    (`csv_cell`).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for g in groups:
        counts = [getattr(g, name) for name in _USAGE_FIELDS]
        writer.writerow(
            [
                csv_cell(g.group or ""),
                *counts,
                dollars(g.cost_nanos),
                g.errors,
                g.estimated,
                g.blocked,
                dollars(g.blocked_would_cost_nanos),
                g.retries,
                dollars(g.retry_cost_nanos),
            ]
        )
    return out.getvalue()


def _group_json(usage: UsageGroup) -> dict[str, object]:
    body: dict[str, object] = {"group": usage.group}
    body.update({name: getattr(usage, name) for name in _USAGE_FIELDS})
    body.update(
        cost_nanos=usage.cost_nanos,
        cost_usd=dollars(usage.cost_nanos),
        errors=usage.errors,
        estimated=usage.estimated,
        blocked=usage.blocked,
        blocked_would_cost_nanos=usage.blocked_would_cost_nanos,
        blocked_would_cost_usd=dollars(usage.blocked_would_cost_nanos),
        retries=usage.retries,
        retry_cost_nanos=usage.retry_cost_nanos,
        retry_cost_usd=dollars(usage.retry_cost_nanos),
    )
    return body


def to_json(report: TopSpenders) -> dict[str, object]:
    """JSON-ready: costs as integer nanos (exact) and as dollar strings (readable)."""
    top = [{"rank": r.rank, **_group_json(r.usage), "share_bp": r.share_bp} for r in report.top]
    rest = _group_json(report.rest)
    del rest["group"]
    rest.update(groups=report.rest_groups, share_bp=report.rest_share_bp)
    return {
        "total_cost_nanos": report.total_cost_nanos,
        "total_cost_usd": dollars(report.total_cost_nanos),
        "total_groups": report.total_groups,
        "top_share_bp": report.top_share_bp,
        "top": top,
        "rest": rest,
    }


# ---------------------------------------------------------------------------- periods

PERIOD_FORMS = (
    "today, yesterday, month, all, <N>h, <N>d, <N>w, YYYY-MM-DD or YYYY-MM-DD..YYYY-MM-DD"
)

_RELATIVE = re.compile(r"^([0-9]+)([hdw])$")
_UNITS = {"h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def parse_period(text: str, now: datetime) -> tuple[datetime, datetime]:
    """A report period as ``[since, until)`` in UTC.

    Periods "to date" (``today``, ``month``, ``7d``, ``24h``, ``all``) end at ``now``;
    ``yesterday`` ends at today's midnight. Explicit dates are whole UTC days with both
    ends included: ``2026-11-01..2026-11-29`` is ``[Nov 1 00:00, Nov 30 00:00)``.
    """
    if now.tzinfo is None:
        raise ValueError("parse_period needs a timezone-aware now")
    now = now.astimezone(UTC)
    spec = text.strip().lower()
    today = _midnight(now.date())
    named = {
        "today": (today, now),
        "yesterday": (today - timedelta(days=1), today),
        "month": (today.replace(day=1), now),
        "all": (_BEGINNING, now),
    }
    if spec in named:
        return named[spec]
    relative = _RELATIVE.match(spec)
    if relative is not None:
        return _relative_period(text, int(relative.group(1)), relative.group(2), now)
    return _date_range(text, spec)


def _relative_period(text: str, count: int, unit: str, now: datetime) -> tuple[datetime, datetime]:
    if count == 0:
        raise ValueError(f"period {text!r} is empty: use a count of 1 or more")
    try:
        return max(now - count * _UNITS[unit], _BEGINNING), now
    except OverflowError:
        return _BEGINNING, now


def _date_range(text: str, spec: str) -> tuple[datetime, datetime]:
    first_text, separator, last_text = spec.partition("..")
    first = _parse_date(text, first_text)
    last = _parse_date(text, last_text) if separator else first
    if last < first:
        raise ValueError(f"period {text!r} ends before it starts")
    if last == date.max:  # its end, the next midnight, is past what a datetime holds
        raise ValueError(
            f"period {text!r} ends after {date.max - timedelta(days=1)}, "
            "the last day a report can cover"
        )
    # No row is older than the epoch ("all" starts there too); days before it are clamped
    # to it, so that a report's look-back from the period's end (30 days of answers for
    # the estimates) stays within what a datetime holds.
    return max(_midnight(first), _BEGINNING), max(_midnight(last) + timedelta(days=1), _BEGINNING)


def _parse_date(text: str, part: str) -> date:
    try:
        return date.fromisoformat(part.strip())
    except ValueError:
        raise ValueError(f"unknown period {text!r}; use one of: {PERIOD_FORMS}") from None
