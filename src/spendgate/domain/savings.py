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

Three figures per group, so that budgets that bind do not read as savings
(`spendgate.domain.capped`): the price routing changed for the requests served
(``price_saved``: counterfactual - cost), what the same requests would have cost unrouted
(``counterfactual``), and the spend difference members actually saw (``spend_saved``:
the counterfactual capped at each dollar budget's limit - cost). Shadow rules give the
same figures as a prediction: ``shadow_price_saved`` (cost - shadow cost), the unrouted
cost (the cost itself) and ``shadow_spend_saved`` (nothing where a budget bound). Without
dollar budgets, or where none binds, spend and price figures are equal.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum

from spendgate.domain.capped import CappedRow
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
    shadow_cost_nanos: int = 0  # had shadow rules routed them (own cost where none would)
    capped_counterfactual_nanos: int = 0  # the counterfactual capped at budget limits
    shadow_spend_saved_nanos: int = 0  # the spend shadow rules predict saved
    bound_members: int = 0  # budget member-windows that refused requests
    capped_members: int = 0  # budget member-windows whose limit capped the counterfactual
    bound_budgets: tuple[str, ...] = ()  # the budgets of those, by name

    @property
    def saved_nanos(self) -> int:
        """What routing changed in price for the requests served (= `price_saved_nanos`)."""
        return self.counterfactual_nanos - self.cost_nanos

    @property
    def price_saved_nanos(self) -> int:
        return self.saved_nanos

    @property
    def saved_bp(self) -> int:
        """Saved, in basis points of the counterfactual cost (0 when that is 0)."""
        return share_bp(self.saved_nanos, self.counterfactual_nanos)

    @property
    def spend_saved_nanos(self) -> int:
        """The spend difference members saw: capped counterfactual - cost."""
        return self.capped_counterfactual_nanos - self.cost_nanos

    @property
    def spend_saved_bp(self) -> int:
        return share_bp(self.spend_saved_nanos, self.capped_counterfactual_nanos)

    @property
    def shadow_price_saved_nanos(self) -> int:
        """What shadow rules would have changed in price for these requests."""
        return self.cost_nanos - self.shadow_cost_nanos

    @property
    def budget_bound(self) -> bool:
        return bool(self.bound_members or self.capped_members)


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
    shadow_cost: int = 0
    kinds: dict[str, set[str]] = field(default_factory=dict)
    fell_back: set[str] = field(default_factory=set)

    def add(self, row: LedgerRow, request: str) -> None:
        self.requests.add(request)
        self.cost += row.cost_nanos
        self.counterfactual += _counterfactual(row)
        self.shadow_cost += _shadow_cost(row)
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
            shadow_cost_nanos=self.shadow_cost,
            capped_counterfactual_nanos=self.counterfactual,
            shadow_spend_saved_nanos=self.cost - self.shadow_cost,
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
    return Savings(
        groups=ranked, total=_total(ranked), shadow=tuple(sorted(shadow, key=lambda s: s.rule))
    )


def _total(groups: Sequence[SavingsGroup]) -> SavingsGroup:
    def add(name: str) -> int:
        return sum(getattr(g, name) for g in groups)

    return SavingsGroup(
        group=None,
        requests=add("requests"),
        cost_nanos=add("cost_nanos"),
        counterfactual_nanos=add("counterfactual_nanos"),
        aliased=add("aliased"),
        rewritten=add("rewritten"),
        downgraded=add("downgraded"),
        fell_back=add("fell_back"),
        shadow_cost_nanos=add("shadow_cost_nanos"),
        capped_counterfactual_nanos=add("capped_counterfactual_nanos"),
        shadow_spend_saved_nanos=add("shadow_spend_saved_nanos"),
        # a member-window can hold rows of several groups: `with_caps` counts it once
        bound_members=add("bound_members"),
        capped_members=add("capped_members"),
        bound_budgets=tuple(sorted({b for g in groups for b in g.bound_budgets})),
    )


def with_caps(folded: Savings, rows: Iterable[CappedRow], by: SavingsBy) -> Savings:
    """``folded`` with its spend figures from budget-capped rows
    (`spendgate.domain.capped.capped_rows` over the same period's rows)."""
    capped: dict[str | None, int] = {}
    shadow_saved: dict[str | None, int] = {}
    bound: dict[str | None, set[tuple[str, str, int]]] = {}
    clipped: dict[str | None, set[tuple[str, str, int]]] = {}
    all_bound: set[tuple[str, str, int]] = set()
    all_clipped: set[tuple[str, str, int]] = set()
    for item in rows:
        name = _group_of(item.row, by)
        capped[name] = capped.get(name, 0) + item.capped_counterfactual_nanos
        shadow_saved[name] = shadow_saved.get(name, 0) + item.shadow_spend_saved_nanos
        bound.setdefault(name, set()).update(item.bound)
        clipped.setdefault(name, set()).update(item.capped)
        all_bound.update(item.bound)
        all_clipped.update(item.capped)

    def group(g: SavingsGroup) -> SavingsGroup:
        hit = bound.get(g.group, set()) | clipped.get(g.group, set())
        return replace(
            g,
            capped_counterfactual_nanos=capped.get(g.group, 0),
            shadow_spend_saved_nanos=shadow_saved.get(g.group, 0),
            bound_members=len(bound.get(g.group, ())),
            capped_members=len(clipped.get(g.group, ())),
            bound_budgets=tuple(sorted({w[0] for w in hit})),
        )

    groups = tuple(group(g) for g in folded.groups)
    total = replace(
        _total(groups),
        bound_members=len(all_bound),
        capped_members=len(all_clipped),
    )
    return Savings(groups=groups, total=total, shadow=folded.shadow)


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
    "capped_counterfactual_usd",
    "spend_saved_usd",
    "shadow_cost_usd",
    "shadow_price_saved_usd",
    "shadow_spend_saved_usd",
    "bound_members",
    "capped_members",
    "bound_budgets",
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
        "price_saved_nanos": group.price_saved_nanos,
        "price_saved_usd": dollars(group.price_saved_nanos),
        "capped_counterfactual_nanos": group.capped_counterfactual_nanos,
        "capped_counterfactual_usd": dollars(group.capped_counterfactual_nanos),
        "spend_saved_nanos": group.spend_saved_nanos,
        "spend_saved_usd": dollars(group.spend_saved_nanos),
        "spend_saved_bp": group.spend_saved_bp,
        "shadow_cost_nanos": group.shadow_cost_nanos,
        "shadow_cost_usd": dollars(group.shadow_cost_nanos),
        "shadow_price_saved_nanos": group.shadow_price_saved_nanos,
        "shadow_price_saved_usd": dollars(group.shadow_price_saved_nanos),
        "shadow_spend_saved_nanos": group.shadow_spend_saved_nanos,
        "shadow_spend_saved_usd": dollars(group.shadow_spend_saved_nanos),
        "budget_bound": group.budget_bound,
        "bound_members": group.bound_members,
        "capped_members": group.capped_members,
        "bound_budgets": list(group.bound_budgets),
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
                dollars(g.capped_counterfactual_nanos),
                dollars(g.spend_saved_nanos),
                dollars(g.shadow_cost_nanos),
                dollars(g.shadow_price_saved_nanos),
                dollars(g.shadow_spend_saved_nanos),
                g.bound_members,
                g.capped_members,
                csv_cell(" ".join(g.bound_budgets)),
            ]
        )
    return out.getvalue()
