"""Alerts' subscriber to the outcome events, and what each event means as an alert.

`AlertInbox` is what the event bus calls on the request path: it keeps the events some
alert rule wants, with the time, on an in-memory queue, and wakes the writer; nothing
else (no IO, no formatting). The background writer (`spendgate.services.alerts`) turns
them into `spendgate.domain.alerts.Alert` values with `alerts_of`, and raises each once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from spendgate.clock import Clock, to_ms
from spendgate.config.alerts import AlertsConfig
from spendgate.domain.alerts import Alert, percent, quiet_period
from spendgate.domain.budgets import Unit
from spendgate.events import (
    BreakerOpened,
    Event,
    Refused,
    Served,
    SettledAbove,
    ThresholdCrossed,
)

LOOP_DETECTOR = "loop-detection"  # `spendgate.domain.budgets.loop_detector`'s name


class AlertInbox:
    """The subscriber: cheap and never blocking (see `spendgate.events`)."""

    def __init__(self, config: AlertsConfig, clock: Clock) -> None:
        self.pending: deque[tuple[Event, datetime]] = deque()
        self.dropped = 0  # events left out because the queue was full
        self.wake: Callable[[], None] | None = None
        self.on_drop: Callable[[], None] | None = None  # told of each (metrics)
        self._clock = clock
        self.configure(config)

    def configure(self, config: AlertsConfig) -> None:
        self.config = config
        kinds = {kind for rule in config.events for kind in rule.kinds}
        wanted: set[type] = set()
        if config.budgets:
            wanted.add(ThresholdCrossed)
        if kinds & {"refused", "loop_detected"}:
            wanted.add(Refused)
        if "downgraded" in kinds:
            wanted.add(Served)
        if "breaker_opened" in kinds:
            wanted.add(BreakerOpened)
        if "settled_above" in kinds:
            wanted.add(SettledAbove)
        self._wanted = frozenset(wanted) if config.enabled else frozenset()

    def __call__(self, event: Event) -> None:
        if type(event) not in self._wanted:
            return
        if isinstance(event, Served) and event.row.route_kind != "downgrade":
            return
        if len(self.pending) >= self.config.queue_max:
            self.dropped += 1
            if self.on_drop is not None:
                self.on_drop()
            return
        self.pending.append((event, self._clock.now()))
        if self.wake is not None:
            self.wake()


def alerts_of(event: Event, at: datetime, config: AlertsConfig) -> list[Alert]:
    """The alert an event raises under ``config`` (none, or one naming every channel and
    contact the matching rules send it to)."""
    if isinstance(event, ThresholdCrossed):
        return _threshold(event, at, config)
    found = _event_alert(event)
    if found is None:
        return []
    channels: list[str] = []
    contacts: list[str] = []
    quiet = 0
    for rule in config.events:
        if found.kind not in rule.kinds:
            continue
        channels += rule.channels
        if rule.notify_member:
            contacts += [c for c in _callers_contacts(event) if c in config.contacts]
        quiet = max(quiet, rule.quiet_s)
    if not quiet or not (channels or contacts):
        return []
    period = quiet_period(to_ms(at), quiet)
    return [
        Alert(
            found.kind,
            found.subject,
            found.member,
            period,
            "",
            at,
            found.title,
            found.text,
            found.facts,
            tuple(dict.fromkeys(contacts)),
            tuple(dict.fromkeys(channels)),
        )
    ]


def _threshold(event: ThresholdCrossed, at: datetime, config: AlertsConfig) -> list[Alert]:
    channels: list[str] = []
    contacts: list[str] = []
    matched = False
    for rule in config.budgets:
        if rule.budget not in ("*", event.budget):
            continue
        if event.threshold_bp not in {int(t * 10_000) for t in rule.thresholds}:
            continue
        matched = True
        channels += rule.channels
        contact = f"{event.scope}:{event.member}"
        if rule.notify_member and contact in config.contacts:
            contacts.append(contact)
    if not matched or not (channels or contacts):
        return []
    unit = _unit(event.unit)
    limit = unit.render(event.limit) if unit else str(event.limit)
    used = percent(event.used_bp)
    title = f"{event.budget}: {event.member} passed {percent(event.threshold_bp)} of its limit"
    text = (
        f"Budget {event.budget} ({event.scope} '{event.member}') is {used} used "
        f"(spent and reserved) of {limit} this period."
    )
    facts = (
        ("budget", event.budget),
        ("member", event.member),
        ("scope", event.scope),
        ("threshold", percent(event.threshold_bp)),
        ("used", used),
        ("limit", limit),
        ("request_id", event.request_id),
    )
    return [
        Alert(
            "threshold",
            event.budget,
            event.member,
            event.window_since_ms,
            str(event.threshold_bp),
            at,
            title,
            text,
            facts,
            tuple(dict.fromkeys(contacts)),
            tuple(dict.fromkeys(channels)),
        )
    ]


def _unit(value: str) -> Unit | None:
    try:
        return Unit(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class _Found:
    """What an event says, before the rules decide where it goes."""

    kind: str
    subject: str
    member: str
    title: str
    text: str
    facts: tuple[tuple[str, object], ...]


def _event_alert(event: Event) -> _Found | None:
    if isinstance(event, Refused):
        row = event.row
        what = event.reason
        kind = "loop_detected" if what == LOOP_DETECTOR else "refused"
        verb = "a loop" if kind == "loop_detected" else f"refused by {what}"
        who = row.user or row.key_id
        return _Found(
            kind,
            what,
            row.key_id,
            f"{who}: {verb}",
            f"A request of key {row.key_id} (team {row.team or '-'}, user {row.user or '-'}) "
            f"for {row.requested_model} was refused by {what}: {(row.error or '')[:300]}",
            (
                ("blocked_by", what),
                ("key_id", row.key_id),
                ("team", row.team),
                ("user", row.user),
                ("model", row.requested_model),
                ("request_id", row.request_id),
            ),
        )
    if isinstance(event, Served):
        row = event.row
        served = row.routed_model or row.served_model
        return _Found(
            "downgraded",
            row.route_rule or "",
            row.key_id,
            f"{row.user or row.key_id}: downgraded to {served}",
            f"A request of key {row.key_id} for {row.requested_model} was sent to {served} "
            f"by rule {row.route_rule or '-'}.",
            (
                ("rule", row.route_rule),
                ("key_id", row.key_id),
                ("team", row.team),
                ("requested_model", row.requested_model),
                ("model", served),
            ),
        )
    if isinstance(event, BreakerOpened):
        return _Found(
            "breaker_opened",
            event.model,
            event.key_id,
            f"{event.model}: circuit breaker open",
            f"{event.failures} failures in a row for key {event.key_id} on {event.model}: "
            f"requests fail fast for {event.cooldown_s:g}s.",
            (("model", event.model), ("key_id", event.key_id), ("failures", event.failures)),
        )
    if isinstance(event, SettledAbove):
        return _Found(
            "settled_above",
            event.budget,
            event.member,
            f"{event.budget}: {event.member} charged above its reservation",
            f"Request {event.request_id} reserved {event.reserved} on {event.budget} but "
            f"was charged {event.charged} (in the budget's unit: nano-dollars or tokens).",
            (
                ("budget", event.budget),
                ("member", event.member),
                ("reserved", event.reserved),
                ("charged", event.charged),
                ("request_id", event.request_id),
            ),
        )
    return None


def _callers_contacts(event: Event) -> list[str]:
    if isinstance(event, Refused | Served):
        row = event.row
        found = [f"key:{row.key_id}"]
        if row.team:
            found.append(f"team:{row.team}")
        if row.user:
            found.append(f"user:{row.user}")
        return found
    if isinstance(event, BreakerOpened):
        return [f"key:{event.key_id}"]
    return []
