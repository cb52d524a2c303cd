"""What routing saved: actual cost against the cost had every request been served by the
model it asked for. Pure: folds ledger rows (`savings`, the
reference) or a backend's per-group sums (`from_totals`, what reports use), no IO.

The counterfactual of a row is its ``baseline_cost_nanos`` (the same usage at the prices of
the model asked for, after its alias), or its own cost when that is NULL (not rerouted).
Saved is counterfactual minus actual; it is negative where routing or a fallback chose a
dearer model. Every attempt that reached an upstream counts, a failed one as charged.

A request is counted once however many attempts it took (attempt ``n`` has the request id
``<id>-<n>``). Refused requests (``blocked_by``) never reached a model and are left out.
Shadow rules: for each, the requests it would have rerouted, what they cost, and what they
would have cost on its model; a row with no shadow price counts at its own cost. A row
charged at its reservation (``unreconciled``: the gateway died first) has no measured
usage to reprice, so it counts at its charge on every side and saves nothing.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.reports import dollars, share_bp
from spendgate.text import csv_cell


class SavingsBy(Enum):
    TEAM = "team"
    SERVICE = "service"


@dataclass(frozen=True, slots=True)
class SavingsGroup:
    group: str | None  # the team or service; None: keys without one (or the total)
    requests: int = 0
    cost_nanos: int = 0  # what was charged
    counterfactual_nanos: int = 0  # had each request been served by the model it asked for
    aliased: int = 0  # requests an alias rule resolved
    rewritten: int = 0  # requests a rewrite rule moved to another model
    downgraded: int = 0  # requests a budget-aware downgrade stepped down a tier
    fell_back: int = 0  # requests answered by a fallback attempt

    @property
    def saved_nanos(self) -> int:
        return self.counterfactual_nanos - self.cost_nanos

    @property
    def saved_bp(self) -> int:
        """Saved, in basis points of the counterfactual cost (0 when that is 0)."""
        return share_bp(self.saved_nanos, self.counterfactual_nanos)


@dataclass(frozen=True, slots=True)
class ShadowSavings:
    rule: str
    requests: int  # requests the shadow rule would have rerouted
    cost_nanos: int  # what they cost
    shadow_cost_nanos: int  # what they would have cost on the shadow rule's model

    @property
    def would_save_nanos(self) -> int:
        return self.cost_nanos - self.shadow_cost_nanos

    @property
    def would_save_bp(self) -> int:
        return share_bp(self.would_save_nanos, self.cost_nanos)


@dataclass(frozen=True, slots=True)
class Savings:
    groups: tuple[SavingsGroup, ...]  # most saved first; ties by name, None last
    total: SavingsGroup
    shadow: tuple[ShadowSavings, ...]  # by rule name


@dataclass(slots=True)
class _Tally:
    requests: set[str] = field(default_factory=set)
    cost: int = 0
    counterfactual: int = 0
    kinds: dict[str, set[str]] = field(default_factory=dict)
    fell_back: set[str] = field(default_factory=set)

    def add(self, row: LedgerRow, request: str) -> None:
        self.requests.add(request)
        self.cost += row.cost_nanos
        self.counterfactual += _counterfactual(row)
        if row.route_kind is not None:
            self.kinds.setdefault(row.route_kind, set()).add(request)
        if row.attempt > 0 and row.status < 400:
            self.fell_back.add(request)

    def group(self, name: str | None) -> SavingsGroup:
        def kind(value: str) -> int:
            return len(self.kinds.get(value, ()))

        return SavingsGroup(
            group=name,
            requests=len(self.requests),
            cost_nanos=self.cost,
            counterfactual_nanos=self.counterfactual,
            aliased=kind("alias"),
            rewritten=kind("rewrite"),
            downgraded=kind("downgrade"),
            fell_back=len(self.fell_back),
        )


@dataclass(slots=True)
class _ShadowTally:
    requests: set[str] = field(default_factory=set)
    cost: int = 0
    shadow_cost: int = 0


def _counterfactual(row: LedgerRow) -> int:
    # An unreconciled row was charged its reservation, not measured usage: its baseline and
    # shadow costs say nothing, so it counts at its charge on both sides.
    base = row.baseline_cost_nanos
    return row.cost_nanos if base is None or row.unreconciled else base


def _shadow_cost(row: LedgerRow) -> int:
    priced = row.shadow_cost_nanos
    return row.cost_nanos if priced is None or row.unreconciled else priced


def request_of(row: LedgerRow) -> str:
    """The id of the request a row belongs to (a fallback attempt's row adds ``-<n>``)."""
    return row.request_id.removesuffix(f"-{row.attempt}") if row.attempt else row.request_id


def _group_of(row: LedgerRow, by: SavingsBy) -> str | None:
    return row.team if by is SavingsBy.TEAM else row.service


def _ranking_key(group: SavingsGroup) -> tuple[int, bool, str]:
    return (-group.saved_nanos, group.group is None, group.group or "")


def from_totals(groups: Iterable[SavingsGroup], shadow: Iterable[ShadowSavings]) -> Savings:
    """Savings from per-group totals a backend summed (a request's rows share its key, so
    they share its team and service: the total is the sum of the groups)."""
    ranked = tuple(sorted(groups, key=_ranking_key))
    total = SavingsGroup(
        group=None,
        requests=sum(g.requests for g in ranked),
        cost_nanos=sum(g.cost_nanos for g in ranked),
        counterfactual_nanos=sum(g.counterfactual_nanos for g in ranked),
        aliased=sum(g.aliased for g in ranked),
        rewritten=sum(g.rewritten for g in ranked),
        downgraded=sum(g.downgraded for g in ranked),
        fell_back=sum(g.fell_back for g in ranked),
    )
    return Savings(groups=ranked, total=total, shadow=tuple(sorted(shadow, key=lambda s: s.rule)))


def savings(rows: Iterable[LedgerRow], by: SavingsBy) -> Savings:
    """Fold ledger rows into savings per team or service, a total, and per shadow rule."""
    groups: dict[str | None, _Tally] = {}
    total = _Tally()
    shadows: dict[str, _ShadowTally] = {}
    for row in rows:
        if row.blocked_by is not None:
            continue
        request = request_of(row)
        groups.setdefault(_group_of(row, by), _Tally()).add(row, request)
        total.add(row, request)
        if row.shadow_rule is not None:
            shadow = shadows.setdefault(row.shadow_rule, _ShadowTally())
            shadow.requests.add(request)
            shadow.cost += row.cost_nanos
            shadow.shadow_cost += _shadow_cost(row)
    return Savings(
        groups=tuple(sorted((t.group(g) for g, t in groups.items()), key=_ranking_key)),
        total=total.group(None),
        shadow=tuple(
            ShadowSavings(rule, len(t.requests), t.cost, t.shadow_cost)
            for rule, t in sorted(shadows.items())
        ),
    )


# ---------------------------------------------------------------------------- export

CSV_HEADER = (
    "group",
    "requests",
    "cost_usd",
    "counterfactual_usd",
    "saved_usd",
    "saved_bp",
    "aliased",
    "rewritten",
    "downgraded",
    "fell_back",
)


def group_json(group: SavingsGroup) -> dict[str, object]:
    """Costs as exact integer nanos and as dollar strings; the share in basis points."""
    return {
        "group": group.group,
        "requests": group.requests,
        "cost_nanos": group.cost_nanos,
        "cost_usd": dollars(group.cost_nanos),
        "counterfactual_nanos": group.counterfactual_nanos,
        "counterfactual_usd": dollars(group.counterfactual_nanos),
        "saved_nanos": group.saved_nanos,
        "saved_usd": dollars(group.saved_nanos),
        "saved_bp": group.saved_bp,
        "aliased": group.aliased,
        "rewritten": group.rewritten,
        "downgraded": group.downgraded,
        "fell_back": group.fell_back,
    }


def shadow_json(shadow: ShadowSavings) -> dict[str, object]:
    return {
        "rule": shadow.rule,
        "requests": shadow.requests,
        "cost_nanos": shadow.cost_nanos,
        "cost_usd": dollars(shadow.cost_nanos),
        "shadow_cost_nanos": shadow.shadow_cost_nanos,
        "shadow_cost_usd": dollars(shadow.shadow_cost_nanos),
        "would_save_nanos": shadow.would_save_nanos,
        "would_save_usd": dollars(shadow.would_save_nanos),
        "would_save_bp": shadow.would_save_bp,
    }


def to_csv(groups: Sequence[SavingsGroup]) -> str:
    """Header plus one line per group, in the given order; dollars with 9 decimals. A group
    name a spreadsheet would run as a formula starts with a single quote (`csv_cell`)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for g in groups:
        writer.writerow(
            [
                csv_cell(g.group or ""),
                g.requests,
                dollars(g.cost_nanos),
                dollars(g.counterfactual_nanos),
                dollars(g.saved_nanos),
                g.saved_bp,
                g.aliased,
                g.rewritten,
                g.downgraded,
                g.fell_back,
            ]
        )
    return out.getvalue()
