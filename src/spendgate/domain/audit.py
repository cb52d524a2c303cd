"""The audit log's entries: who changed what, when, from what to what. Pure.

An entry is written for every admin change, through the admin API and the CLI alike
(`spendgate.services.audit`). ``before`` and ``after`` are JSON objects without secrets (a
key's hint, never its secret or hash). ``team`` is the team the change touched, if any: a
team admin sees the entries of its team only.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson

from spendgate.text import csv_cell


class AuditAction(StrEnum):
    KEY_CREATE = "key.create"
    KEY_UPDATE = "key.update"
    KEY_REVOKE = "key.revoke"
    KEY_ROTATE = "key.rotate"
    BUDGET_SET_LIMIT = "budget.set_limit"
    BUDGET_CLEAR_LIMIT = "budget.clear_limit"
    BUDGET_RESET = "budget.reset"
    CONFIG_RELOAD = "config.reload"
    LOOP_RELEASE = "loop.release"
    TOKEN_CREATE = "token.create"  # noqa: S105 (an action, not a secret)
    TOKEN_REVOKE = "token.revoke"  # noqa: S105


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: str
    at: datetime  # the injected clock's time of the change
    actor: str  # `spendgate.domain.roles.Principal.actor`: token:<id> (<name>), env, cli:<user>
    role: str  # the actor's role
    action: AuditAction
    target: str  # a key id, a budget name (member), a token id, a loop id, the config file
    team: str | None  # the team the change touched, if any
    before: dict[str, Any] | None
    after: dict[str, Any] | None

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "role": self.role,
            "action": self.action.value,
            "target": self.target,
            "team": self.team,
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Entries at ``[since, until)`` (either open), optionally of one actor, one action and
    one team (``team_only``: a team admin's view), newest first, at most ``limit``."""

    since: datetime | None = None
    until: datetime | None = None
    actor: str | None = None
    action: AuditAction | None = None
    team_only: str | None = None
    limit: int = 1000

    def matches(self, entry: AuditEntry) -> bool:
        """The reference every store's filtering must equal."""
        return (
            (self.since is None or entry.at >= self.since)
            and (self.until is None or entry.at < self.until)
            and (self.actor is None or entry.actor == self.actor)
            and (self.action is None or entry.action is self.action)
            and (self.team_only is None or entry.team == self.team_only)
        )


CSV_HEADER = ("id", "at", "actor", "role", "action", "target", "team", "before", "after")


def _json_text(value: dict[str, Any] | None) -> str:
    return "" if value is None else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def to_csv(entries: Iterable[AuditEntry]) -> str:
    """One row per entry, before/after as JSON text; every cell as in the reports' CSV
    (`spendgate.text.csv_cell`: never run as a formula, no control character)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for e in entries:
        cells = (e.id, e.at.isoformat(), e.actor, e.role, e.action.value, e.target, e.team or "")
        writer.writerow([csv_cell(c) for c in (*cells, _json_text(e.before), _json_text(e.after))])
    return out.getvalue()
