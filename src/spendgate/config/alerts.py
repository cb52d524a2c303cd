"""The ``alerts:`` section: where alerts go (channels, and each member's own contacts), what
raises one (budget thresholds, a projected overrun, refusals, downgrades, loops, breakers,
overruns of a reservation), and how deliveries are retried. See docs/alerts.md.

Secrets stay out of the file: a webhook URL that is itself a secret (Slack's) is named by
``url_env``, SMTP credentials by ``username_env``/``password_env``."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
NAME = r"^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$"
CONTACT = r"^(org|team|service|user|key|tag):[^\s]+$"
EVENT_KINDS = ("refused", "downgraded", "loop_detected", "breaker_opened", "settled_above")
EventKind = Literal["refused", "downgraded", "loop_detected", "breaker_opened", "settled_above"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class ChannelConfig(_Strict):
    """One destination: a generic JSON webhook, a Slack-compatible webhook, or e-mail."""

    kind: Literal["webhook", "slack", "email"]
    url: str | None = None  # webhook, slack: the URL...
    url_env: Annotated[str | None, Field(pattern=ENV_NAME)] = None  # ... or the env var holding it
    headers_env: dict[str, Annotated[str, Field(pattern=ENV_NAME)]] = Field(default_factory=dict)
    to: list[Annotated[str, Field(min_length=3)]] = Field(default_factory=list)  # email
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0

    @model_validator(mode="after")
    def _shape(self) -> ChannelConfig:
        if self.kind == "email":
            if not self.to:
                raise ValueError("an email channel needs 'to' (one address or more)")
            if self.url or self.url_env or self.headers_env:
                raise ValueError("an email channel takes 'to', not url, url_env or headers_env")
            return self
        if (self.url is None) == (self.url_env is None):
            raise ValueError(f"a {self.kind} channel needs exactly one of url or url_env")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://")
        if self.to:
            raise ValueError(f"a {self.kind} channel takes no 'to'")
        return self


class SmtpConfig(_Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 25
    sender: Annotated[str, Field(min_length=3)] = "spendgate@localhost"
    starttls: bool = False
    tls: bool = False  # implicit TLS (SMTPS, usually port 465)
    username_env: Annotated[str | None, Field(pattern=ENV_NAME)] = None
    password_env: Annotated[str | None, Field(pattern=ENV_NAME)] = None
    timeout_s: Annotated[float, Field(gt=0, le=120)] = 10.0


class BudgetAlertConfig(_Strict):
    """Alerts of budgets: thresholds of the limit crossed, and a projected overrun."""

    budget: Annotated[str, Field(min_length=1)] = "*"  # a budget's name, or * for every budget
    thresholds: list[Annotated[Decimal, Field(gt=0, le=10)]] = Field(
        default_factory=lambda: [Decimal("0.5"), Decimal("0.8"), Decimal("0.95"), Decimal("1")]
    )
    projected: bool = True  # alert when the burn rate would exceed the limit before the reset
    channels: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list)
    notify_member: bool = False  # also the member's own contact (contacts: "team:<member>")


class EventAlertConfig(_Strict):
    """Alerts of what happened to requests, at most one per subject per ``quiet_s``."""

    kinds: Annotated[list[EventKind], Field(min_length=1)]
    channels: list[Annotated[str, Field(pattern=NAME)]] = Field(default_factory=list)
    notify_member: bool = False  # also the caller's team, user and key contacts
    quiet_s: Annotated[int, Field(ge=1)] = 3600


class AlertsConfig(_Strict):
    channels: dict[Annotated[str, Field(pattern=NAME)], ChannelConfig] = Field(default_factory=dict)
    contacts: dict[Annotated[str, Field(pattern=CONTACT)], list[ChannelConfig]] = Field(
        default_factory=dict
    )
    budgets: list[BudgetAlertConfig] = Field(default_factory=list)
    events: list[EventAlertConfig] = Field(default_factory=list)
    smtp: SmtpConfig = Field(default_factory=SmtpConfig)
    burn_window_s: Annotated[int, Field(ge=60)] = 3600  # the recent window of a burn rate
    forecast_interval_s: Annotated[float, Field(gt=0)] = 60.0  # how often projections run
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 8
    backoff_s: Annotated[float, Field(gt=0)] = 5.0  # the first retry's delay; then doubled
    max_backoff_s: Annotated[float, Field(gt=0)] = 900.0
    claim_lease_s: Annotated[float, Field(gt=0)] = 60.0  # a claimed delivery's lease
    poll_s: Annotated[float, Field(gt=0)] = 5.0  # how often due deliveries are looked for
    queue_max: Annotated[int, Field(ge=1)] = 10_000  # events waiting to be written

    @model_validator(mode="after")
    def _references(self) -> AlertsConfig:
        rules = [("budgets", r.channels) for r in self.budgets]
        rules += [("events", r.channels) for r in self.events]
        for section, channels in rules:
            for name in channels:
                if name not in self.channels:
                    known = ", ".join(sorted(self.channels)) or "none"
                    raise ValueError(
                        f"alerts.{section}: channel {name!r} is not declared under "
                        f"alerts.channels (declared: {known})"
                    )
        return self

    @property
    def enabled(self) -> bool:
        """Something to deliver to, and something to deliver."""
        return bool((self.channels or self.contacts) and (self.budgets or self.events))

    def thresholds_bp(self) -> dict[str, tuple[int, ...]]:
        """The thresholds of each budget named by a rule (``*``: every budget), in basis
        points of the limit."""
        found: dict[str, set[int]] = {}
        for rule in self.budgets:
            found.setdefault(rule.budget, set()).update(int(t * 10_000) for t in rule.thresholds)
        return {name: tuple(sorted(bps)) for name, bps in found.items()}
