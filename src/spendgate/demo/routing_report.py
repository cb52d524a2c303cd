"""The routing chapter's numbers, from the ledger's rows, and its lines in the summary.

Each phase's spend comes from ``cost_nanos``; which rule routed what from ``route_rule``,
``route_kind``, ``requested_model`` and ``routed_model``; what a rewrite saved from
``baseline_cost_nanos`` (the same usage at the prices of the model asked for); what a shadow
rule would have saved from ``shadow_rule``, ``shadow_model`` and ``shadow_cost_nanos``.
Pure: the rows arrive already read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.reports import format_bp, share_bp
from spendgate.money import format_dollars

BY_NAME = "(by name)"  # the route line of requests no rule moved


def money(amount_nanos: int) -> str:
    return format_dollars(amount_nanos, 6)


@dataclass(frozen=True, slots=True)
class RouteLine:
    """Requests one rule (or none) routed from one requested name to one model."""

    rule: str | None
    kind: str | None
    requested: str
    routed: str
    requests: int
    cost_nanos: int
    baseline_cost_nanos: int  # the same usage on the model asked for (after its alias)

    @property
    def saved_nanos(self) -> int:
        return self.baseline_cost_nanos - self.cost_nanos


@dataclass(frozen=True, slots=True)
class ShadowLine:
    """Requests a shadow rule would have sent to another model, and at what cost."""

    rule: str
    model: str
    requests: int
    cost_nanos: int
    shadow_cost_nanos: int

    @property
    def saved_nanos(self) -> int:
        return self.cost_nanos - self.shadow_cost_nanos


@dataclass(frozen=True, slots=True)
class PhaseSpend:
    requests: int
    cost_nanos: int
    by_team: dict[str, int]
    heavy_nanos: int  # the heavy users' share of cost_nanos
    alias_nanos: int  # what the requests for the alias cost
    routes: tuple[RouteLine, ...]
    shadows: tuple[ShadowLine, ...]

    @property
    def shadow_saved_nanos(self) -> int:
        return sum(line.saved_nanos for line in self.shadows)


def phase_spend(rows: Iterable[LedgerRow], heavy: Iterable[str], alias: str) -> PhaseSpend:
    """One phase's served rows (refusals are skipped), summed."""
    heavy_users = frozenset(heavy)
    served = [row for row in rows if row.blocked_by is None]
    by_team: dict[str, int] = {}
    routes: dict[tuple[str | None, str | None, str, str], list[int]] = {}
    shadows: dict[tuple[str, str], list[int]] = {}
    for row in served:
        team = row.team or "-"
        by_team[team] = by_team.get(team, 0) + row.cost_nanos
        routed = row.routed_model or row.requested_model
        baseline = row.cost_nanos if row.baseline_cost_nanos is None else row.baseline_cost_nanos
        key = (row.route_rule, row.route_kind, row.requested_model, routed)
        route = routes.setdefault(key, [0, 0, 0])
        route[0] += 1
        route[1] += row.cost_nanos
        route[2] += baseline
        if row.shadow_rule and row.shadow_model and row.shadow_cost_nanos is not None:
            shadow = shadows.setdefault((row.shadow_rule, row.shadow_model), [0, 0, 0])
            shadow[0] += 1
            shadow[1] += row.cost_nanos
            shadow[2] += row.shadow_cost_nanos
    return PhaseSpend(
        requests=len(served),
        cost_nanos=sum(row.cost_nanos for row in served),
        by_team=dict(sorted(by_team.items())),
        heavy_nanos=sum(row.cost_nanos for row in served if row.user in heavy_users),
        alias_nanos=sum(row.cost_nanos for row in served if row.requested_model == alias),
        routes=tuple(
            sorted(
                (RouteLine(*key, *sums) for key, sums in routes.items()),
                key=lambda line: (-line.cost_nanos, line.rule or "", line.routed),
            )
        ),
        shadows=tuple(
            ShadowLine(rule, model, *sums) for (rule, model), sums in sorted(shadows.items())
        ),
    )


def saving_line(before: int, after: int) -> str:
    """``$x (p%)``: what ``after`` saved against ``before``."""
    return f"{money(before - after)} ({format_bp(share_bp(before - after, before))})"


def _team_lines(before: PhaseSpend, after: PhaseSpend) -> list[str]:
    teams = sorted(set(before.by_team) | set(after.by_team))
    rows = [(team, before.by_team.get(team, 0), after.by_team.get(team, 0)) for team in teams] + [
        ("all", before.cost_nanos, after.cost_nanos)
    ]
    lines = [f"    {'team':<8} {'before':>12} {'after':>12}  saved"]
    for team, was, now in rows:
        lines.append(f"    {team:<8} {money(was):>12} {money(now):>12}  {saving_line(was, now)}")
    return lines


def _route_lines(phase: str, spend: PhaseSpend) -> list[str]:
    lines = []
    for line in spend.routes:
        moved = line.routed
        if line.requested != line.routed:
            moved = f"{line.requested} -> {line.routed}"
        text = (
            f"    {phase:<6}  {line.rule or BY_NAME:<17}  {line.kind or '-':<8} {moved:<36} "
            f"{line.requests:>4}  {money(line.cost_nanos)}"
        )
        if line.saved_nanos:
            text += (
                f"  (on {line.requested}: {money(line.baseline_cost_nanos)}, "
                f"saved {money(line.saved_nanos)})"
            )
        lines.append(text)
    return lines


def _shadow_lines(phase: str, spend: PhaseSpend) -> list[str]:
    return [
        f"    {phase:<6}  {line.rule} would have sent {line.requests} requests to "
        f"{line.model}: {money(line.shadow_cost_nanos)} instead of {money(line.cost_nanos)}, "
        f"saving {saving_line(line.cost_nanos, line.shadow_cost_nanos)}"
        for line in spend.shadows
    ]


def chapter_lines(
    before: PhaseSpend, after: PhaseSpend, *, heavy: Sequence[str], alias: str
) -> list[str]:
    """The chapter's summary: spend per team before and after, the measured saving, the
    heavy users' share, which rule routed what, and what the shadow rules predicted."""
    names = ", ".join(sorted(heavy))
    lines = [
        "  Spend by team, same requests, before and after the switch (the ledger's cost_nanos):",
        *_team_lines(before, after),
        f"  Measured saving: {saving_line(before.cost_nanos, after.cost_nanos)} "
        f"over {before.requests} requests before and {after.requests} after.",
        f"  Heavy users ({names}): {format_bp(share_bp(before.heavy_nanos, before.cost_nanos))} "
        f"of the spend before, {format_bp(share_bp(after.heavy_nanos, after.cost_nanos))} "
        "after.",
        "  Which rule routed what (route_rule, route_kind, requested -> routed_model):",
        *_route_lines("before", before),
        *_route_lines("after", after),
    ]
    if before.shadows or after.shadows:
        lines.append(
            "  Shadow rules, recorded and never enforced (shadow_rule, shadow_cost_nanos):"
        )
        lines += _shadow_lines("before", before) + _shadow_lines("after", after)
    if before.shadows:
        lines.append(
            f"  Before the switch the shadow rules predicted a saving of "
            f"{money(before.shadow_saved_nanos)}; after it the `{alias}` requests cost "
            f"{money(after.alias_nanos)} instead of {money(before.alias_nanos)}: "
            f"{money(before.alias_nanos - after.alias_nanos)} saved."
        )
    return lines
