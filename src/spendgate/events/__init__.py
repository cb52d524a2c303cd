"""Typed outcome events: the pipeline, the lease sweeper and the breakers say what happened
once, here; observers (the access log first, then metrics, alerts) subscribe to them.

One event per outcome of a request attempt:

* `Served`: the provider answered (any status it chose: its own 4xx included); a row;
* `Refused`: a budget, limit, request cap, loop detector or breaker refused; a block row;
* `Rejected`: refused before admission (bad body, unknown model, key not allowed, ...);
* `AuthFailed`: no valid key;
* `UpstreamFailed`: the provider could not be reached, timed out, broke or answered
  429/5xx; a row when it may have billed.

And what happens around requests: `ThresholdCrossed` (a soft threshold of a budget),
`BreakerOpened`, `BreakerClosed`, `LoopStruck` (a loop detected and blocked), `LeaseLapsed`,
`SettledAbove` (a request charged more than it reserved), `UsageAnomaly` (a provider's
usage not believed).

Subscribers run synchronously on the request path, so they must be cheap and must not
block: one that needs IO queues the event and does it elsewhere. A subscriber that raises
is logged and skipped; it never fails a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from spendgate.domain.identity import ApiKey
from spendgate.domain.ledger import LedgerRow

log = logging.getLogger("spendgate.events")


@dataclass(frozen=True, slots=True)
class Served:
    row: LedgerRow
    # Of the row's latency, the time spent waiting on the provider (its answer's head and
    # body, every attempt of the request): the rest is the gateway's own. None: not measured.
    upstream_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Refused:
    row: LedgerRow  # its blocked_by names what refused

    @property
    def reason(self) -> str:
        return self.row.blocked_by or "refused"


@dataclass(frozen=True, slots=True)
class Rejected:
    request_id: str
    surface: str
    key_id: str | None
    status: int
    code: str | None
    message: str
    key: ApiKey | None = None  # who asked, once the key is known
    model: str | None = None  # the model asked for, once the body was read

    @property
    def reason(self) -> str:
        return self.code or _UNCODED.get(self.status, "rejected")


_UNCODED = {
    400: "invalid_request",
    405: "method_not_allowed",
    499: "client_disconnected",
    500: "internal_error",
}


@dataclass(frozen=True, slots=True)
class AuthFailed:
    request_id: str
    surface: str
    message: str

    @property
    def reason(self) -> str:
        return "invalid_api_key"


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    request_id: str
    provider: str
    model: str
    status: int  # the provider's (429, 5xx) or the gateway's (502, 504)
    error: str
    row: LedgerRow | None  # None: nothing reached the provider, nothing was charged
    key: ApiKey | None = None  # who asked (the row names it too, when there is one)
    surface: str = ""  # the API it came in on (the row's, when there is one)
    requested_model: str | None = None  # the name the client sent (``model``: the attempt's)

    @property
    def reason(self) -> str:
        if self.status == 502:
            return "upstream_unavailable"
        if self.status == 504:
            return "upstream_timeout"
        return f"upstream_{self.status}"  # the provider's own 429 or 5xx, relayed


@dataclass(frozen=True, slots=True)
class ThresholdCrossed:
    budget: str
    member: str
    threshold_bp: int  # the soft threshold crossed, in basis points of the limit
    used_bp: int  # spent + reserved after the request that crossed it
    request_id: str
    window_since_ms: int = 0  # the start of the window it was crossed in
    limit: int = 0  # the limit in force, in the budget's unit
    unit: str = ""  # usd | tokens
    scope: str = ""  # the budget's scope (team, user, key, ...)


@dataclass(frozen=True, slots=True)
class BreakerOpened:
    key_id: str
    model: str
    failures: int
    cooldown_s: float


@dataclass(frozen=True, slots=True)
class BreakerClosed:
    """A probe through an open breaker was answered: requests flow again."""

    key_id: str
    model: str


@dataclass(frozen=True, slots=True)
class LoopStruck:
    """The loop detector struck a (key, request) pair, or a whole key (``key_wide``): it is
    blocked for a while (the request is also `Refused`)."""

    key_id: str
    model: str
    strikes: int
    key_wide: bool
    team: str | None = None
    service: str | None = None


@dataclass(frozen=True, slots=True)
class LeaseLapsed:
    row: LedgerRow  # the row in force: charged at its worst case, flagged unreconciled


@dataclass(frozen=True, slots=True)
class UsageAnomaly:
    """The provider's usage could not be believed (missing, malformed or impossible): the
    request was charged an estimate instead, never above its reservation."""

    request_id: str
    provider: str
    model: str
    problem: str


@dataclass(frozen=True, slots=True)
class SettledAbove:
    request_id: str
    budget: str
    member: str
    reserved: int
    charged: int  # more than reserved: the worst case missed something


Event = (
    Served
    | Refused
    | Rejected
    | AuthFailed
    | UpstreamFailed
    | ThresholdCrossed
    | BreakerOpened
    | BreakerClosed
    | LeaseLapsed
    | LoopStruck
    | SettledAbove
    | UsageAnomaly
)
Subscriber = Callable[[Event], None]


class Events:
    """The bus: every subscriber hears every event, in the order they subscribed."""

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def emit(self, event: Event) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(event)
            except Exception:
                log.exception("an event subscriber failed", extra={"event": type(event).__name__})


__all__ = [
    "AuthFailed",
    "BreakerClosed",
    "BreakerOpened",
    "Event",
    "Events",
    "LeaseLapsed",
    "LoopStruck",
    "Refused",
    "Rejected",
    "Served",
    "SettledAbove",
    "Subscriber",
    "ThresholdCrossed",
    "UpstreamFailed",
    "UsageAnomaly",
]
