"""A request's admission ticket: what it reserved, on which counters, and the headers that
tell the client (tensorzero's "tickets": reserve before, return the difference after)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from spendgate.domain.admission import Admitted, CounterState
from spendgate.domain.budgets import Unit
from spendgate.domain.models import Dialect
from spendgate.pipeline.limit_headers import limit_headers
from spendgate.storage.base import ReservationPlan

BUDGET_STATE_HEADER = "x-spendgate-budget-state"


@dataclass(frozen=True, slots=True)
class Ticket:
    plan: ReservationPlan
    admitted: Admitted
    requested_ceiling: int | None  # what the request itself asked for
    bounded: str | None = None  # hidden input bounded: why, and as what
    budget_state: str | None = None  # the tightest budget's state with this request in flight
    keys: tuple[str, ...] = ()  # its counters' ids, for the admission line (made once)

    @property
    def ceiling(self) -> int:
        return self.admitted.ceiling

    @property
    def asked(self) -> int:
        """The output ceiling the request asked for: its own, else what it would get (the
        model's maximum, or the default ceiling)."""
        return self.requested_ceiling or self.plan.worst.requested_ceiling

    @property
    def lowered(self) -> bool:
        """Whether the reserved ceiling is below what the request asked for: a budget
        clamped it, or it asked for more than the model can write (the reservation never
        exceeds the model's maximum output, and neither does the ceiling sent upstream)."""
        return self.ceiling < self.asked

    @property
    def budget_clamped(self) -> bool:
        """Whether a budget (not the model's maximum) set the reserved ceiling below what
        the request asked for."""
        return self.ceiling < min(self.asked, self.plan.worst.requested_ceiling)

    def headers(self, dialect: Dialect, now: datetime) -> dict[str, str]:
        out = limit_headers(self.admitted, dialect, now)
        tightest = self.admitted.tightest
        if tightest is not None:
            index = self.plan.counters.index(tightest.ref)
            left = tightest.room - self.admitted.amounts[index]
            budget = tightest.ref.budget
            out["x-spendgate-budget"] = budget.name
            out["x-spendgate-budget-remaining"] = _plain(budget.unit, left)
            if self.budget_state is not None:
                out[BUDGET_STATE_HEADER] = self.budget_state
            resets = tightest.ref.window.resets_at
            if resets is not None:
                out["x-spendgate-budget-reset"] = resets.isoformat()
        if self.lowered:
            model_max = self.plan.worst.requested_ceiling
            why = f"; the model's maximum is {model_max}" if model_max < self.asked else ""
            out["x-spendgate-output-clamped"] = f"{self.ceiling} (requested {self.asked}{why})"
        if self.bounded is not None:
            out["x-spendgate-input-bounded"] = self.bounded
        if self.admitted.shadow_blocks:
            out["x-spendgate-shadow-blocked"] = ", ".join(self.admitted.shadow_blocks)
        return out


def budget_headers(state: CounterState, condition: str) -> dict[str, str]:
    """What a refusal by a budget tells the client of it: its name, what is left of it
    (requests in flight count as used) and its state (docs/budgets.md, "Budget states")."""
    budget = state.ref.budget
    out = {
        "x-spendgate-budget": budget.name,
        "x-spendgate-budget-remaining": _plain(budget.unit, max(0, state.room)),
        BUDGET_STATE_HEADER: condition,
    }
    resets = state.ref.window.resets_at
    if resets is not None:
        out["x-spendgate-budget-reset"] = resets.isoformat()
    return out


def _plain(unit: Unit, amount: int) -> str:
    if unit is Unit.NANOS:
        return f"{amount / 1e9:.6f} USD"
    return f"{amount} {unit.value}"
