"""Alerts as values: what happened, to whom, and the key that makes it happen once. Pure.

An alert is raised once per `Alert.key`: (kind, subject, member, period start, mark). For a
threshold the mark is the threshold in basis points and the period is the budget's
window, so "team payments passed 80% of team-monthly" is raised once a month whoever
sees it first; for an event (a refusal, a downgrade, ...) the period is a quiet interval,
so a storm of refusals raises one alert per interval. Delivery is retried with exponential
backoff (`retry_delay`) up to a limit of attempts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

KINDS = (
    "threshold",
    "projected",
    "refused",
    "downgraded",
    "loop_detected",
    "breaker_opened",
    "settled_above",
)

AlertKey = tuple[str, str, str, int, str]


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # one of KINDS
    subject: str  # the budget, limit, rule or model it is about
    member: str  # whose: a budget member, a team, a key ("" if nobody's)
    period_ms: int  # the start of the period it is raised once in
    mark: str  # the threshold in basis points ("8000"), or ""
    at: datetime
    title: str
    text: str
    facts: tuple[tuple[str, Any], ...] = ()
    contacts: tuple[str, ...] = field(default=(), compare=False)  # "team:payments", ...
    channels: tuple[str, ...] = field(default=(), compare=False)  # operator channel names

    @property
    def key(self) -> AlertKey:
        return (self.kind, self.subject, self.member, self.period_ms, self.mark)

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "spendgate.alert",
            "kind": self.kind,
            "subject": self.subject,
            "member": self.member,
            "period_start": _iso_ms(self.period_ms),
            "mark": self.mark,
            "at": self.at.isoformat(),
            "title": self.title,
            "text": self.text,
            "facts": dict(self.facts),
        }


def _iso_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def quiet_period(at_ms: int, quiet_s: int) -> int:
    """The start of the quiet interval holding ``at_ms`` (aligned: every process agrees)."""
    width = quiet_s * 1000
    return at_ms // width * width


def retry_delay(attempts: int, base_s: float, cap_s: float) -> timedelta:
    """How long to wait after the ``attempts``-th failed attempt: base, 2x, 4x, ... capped."""
    exponent = min(max(attempts - 1, 0), 30)
    return timedelta(seconds=min(cap_s, base_s * (2**exponent)))


def percent(bp: int) -> str:
    """Basis points as a percentage: 8000 -> "80%", 9550 -> "95.5%"."""
    whole, part = divmod(bp, 100)
    return f"{whole}%" if part == 0 else f"{whole}.{part:02d}".rstrip("0") + "%"


@dataclass(frozen=True, slots=True)
class DeliveryLog:
    """One delivery of one alert to one channel, as the log shows it."""

    delivery_id: int
    alert_id: int
    kind: str
    subject: str
    member: str
    mark: str
    title: str
    channel: str
    status: str  # pending | delivered | failed
    attempts: int
    last_error: str | None
    created_at: datetime
    next_at: datetime | None
    delivered_at: datetime | None
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "alert_id": self.alert_id,
            "kind": self.kind,
            "subject": self.subject,
            "member": self.member,
            "mark": self.mark,
            "title": self.title,
            "channel": self.channel,
            "status": self.status,
            "attempts": self.attempts,
            "last_error": self.last_error,
            "created_at": self.created_at.isoformat(),
            "next_at": self.next_at.isoformat() if self.next_at else None,
            "delivered_at": self.delivered_at.isoformat() if self.delivered_at else None,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class Delivery:
    """A claimed delivery: what to send, where, and how many tries it has had."""

    delivery_id: int
    alert_id: int
    channel: str
    attempts: int
    payload: dict[str, Any]
