"""The alerts' background work, off the request path: one `Alerter` per gateway process.

* **Writer**: the event subscriber (`spendgate.events.alerts.AlertInbox`) only queues; this
  task turns queued events into alerts and raises each through the `AlertStore`, which
  inserts it once (across every process on the database) with one pending delivery per
  channel. A process that already raised or saw an alert key skips it without a write.
* **Sender**: claims due deliveries under a lease (so two processes never send the same
  one at once), sends them concurrently, and records each attempt: delivered, or retried
  after `spendgate.domain.alerts.retry_delay` until ``max_attempts``, then failed.
  Deliveries live in the database: those pending when a process stops are sent after the
  next start, by whichever process claims them.
* **Forecaster**: every ``forecast_interval_s`` raises "projected to exceed" alerts for
  budget members whose burn rate reaches the limit before their period ends.

A receiver that hangs holds one sender slot until its channel's timeout; requests never
wait for any of this.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Protocol

from spendgate.clock import Clock
from spendgate.config.alerts import AlertsConfig, BudgetAlertConfig, ChannelConfig
from spendgate.domain.alerts import Alert, AlertKey, Delivery, retry_delay
from spendgate.domain.forecast import Forecast
from spendgate.events.alerts import AlertInbox, alerts_of
from spendgate.services.alert_channels import DeliveryFailed, send
from spendgate.services.budgets import BudgetView
from spendgate.services.forecasts import forecasts
from spendgate.storage.alerts import AlertStore
from spendgate.storage.stores import Storage

if TYPE_CHECKING:
    import aiohttp

log = logging.getLogger("spendgate.alerts")

CONTACT_PREFIX = "contact:"
CLAIM_BATCH = 32
SEEN_MAX = 10_000

Views = Callable[[], Awaitable[list[BudgetView]]]


class AlertWatcher(Protocol):
    """Told of what this process raised and delivered (metrics): cheap, never raising."""

    def alert_raised(self, kind: str) -> None: ...

    def alert_delivery(self, channel_kind: str, outcome: str) -> None:
        """``outcome``: delivered, retrying (failed, tried again later) or failed (given up)."""


def contact_channel(contact: str, index: int) -> str:
    return f"{CONTACT_PREFIX}{contact}#{index}"


class Alerter:
    def __init__(
        self,
        storage: Storage,
        config: AlertsConfig,
        clock: Clock,
        owner: str,
        env: Mapping[str, str],
        views: Views | None = None,
    ) -> None:
        self._storage = storage
        self._clock = clock
        self.owner = owner
        self.env: Mapping[str, str] = env
        self.config = config
        self.inbox = AlertInbox(config, clock)
        self._views = views
        self._seen: OrderedDict[AlertKey, None] = OrderedDict()
        self._tasks: list[asyncio.Task[None]] = []
        self._http: aiohttp.ClientSession | None = None
        self._write_wake: asyncio.Event | None = None
        self._send_wake: asyncio.Event | None = None
        self.raised = 0  # alerts this process raised (first to see them)
        self.watchers: list[AlertWatcher] = []

    @property
    def store(self) -> AlertStore | None:
        return self._storage.alert_store

    def configure(self, config: AlertsConfig, env: Mapping[str, str]) -> None:
        """Put a reloaded config in force (the tasks start if they were not running)."""
        self.config, self.env = config, env
        self.inbox.configure(config)
        if self._tasks == [] and self._write_wake is not None and self._active():
            self._spawn()

    def _active(self) -> bool:
        return self.store is not None and self.config.enabled

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self._write_wake = asyncio.Event()
        self._send_wake = asyncio.Event()
        self.inbox.wake = self._write_wake.set
        if self._active():
            self._spawn()

    def _spawn(self) -> None:
        import aiohttp

        self._http = aiohttp.ClientSession()
        self._tasks = [
            asyncio.create_task(self._loop(self._write_pass, self._write_wake, "poll_s")),
            asyncio.create_task(self._loop(self.deliver_due, self._send_wake, "poll_s")),
        ]
        if self._views is not None and any(rule.projected for rule in self.config.budgets):
            self._tasks.append(
                asyncio.create_task(self._loop(self.project, None, "forecast_interval_s"))
            )

    async def stop(self) -> None:
        """Write what is queued (so it is delivered after a restart), then stop."""
        with contextlib.suppress(Exception):
            if self._active():
                await asyncio.wait_for(self._write_pass(), timeout=5)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def _loop(
        self, work: Callable[[], Awaitable[int]], wake: asyncio.Event | None, every: str | None
    ) -> None:
        while True:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("alert work failed; it runs again", extra={"work": work.__name__})
            timeout = float(getattr(self.config, every)) if every else None
            if wake is None:
                await asyncio.sleep(timeout or 1.0)
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
            wake.clear()

    # -- writing ----------------------------------------------------------------------------

    async def _write_pass(self) -> int:
        pending = self.inbox.pending
        raised = 0
        while pending:
            event, at = pending[0]
            for alert in alerts_of(event, at, self.config):
                # a store that fails leaves the event first in line, tried again next pass
                raised += await self.raise_alert(alert) is not None
            pending.popleft()
        return raised

    async def raise_alert(self, alert: Alert) -> int | None:
        """Raise ``alert`` unless it was raised before (by any process): its id if this
        call raised it."""
        store = self.store
        if store is None or alert.key in self._seen:
            return None
        channels = [*alert.channels]
        for contact in alert.contacts:
            channels += [contact_channel(contact, i) for i in range(self._contacts(contact))]
        alert_id = await store.raise_alert(alert, channels)
        self._seen[alert.key] = None  # raised now or before: in the store either way
        if len(self._seen) > SEEN_MAX:
            self._seen.popitem(last=False)
        if alert_id is not None:
            self.raised += 1
            for watcher in self.watchers:
                watcher.alert_raised(alert.kind)
            log.info(
                "alert raised",
                extra={"alert": alert.kind, "subject": alert.subject, "member": alert.member},
            )
            if self._send_wake is not None:
                self._send_wake.set()
        return alert_id

    def _contacts(self, contact: str) -> int:
        return len(self.config.contacts.get(contact, ()))

    # -- sending ---------------------------------------------------------------------------

    async def deliver_due(self) -> int:
        """One pass: claim what is due, send it, record each attempt. How many were tried."""
        store = self.store
        if store is None or self._http is None:
            return 0
        now = self._clock.now()
        timeouts = [c.timeout_s for c in self.config.channels.values()] + [
            self.config.smtp.timeout_s
        ]
        lease = max(self.config.claim_lease_s, max(timeouts) * 2)
        claimed = await store.claim_due(
            self.owner, now, now + timedelta(seconds=lease), CLAIM_BATCH
        )
        if claimed:
            await asyncio.gather(*(self._attempt(store, d) for d in claimed))
            if self._send_wake is not None and len(claimed) == CLAIM_BATCH:
                self._send_wake.set()  # there may be more
        return len(claimed)

    async def _attempt(self, store: AlertStore, delivery: Delivery) -> None:
        error: str | None = None
        kind = "unknown"  # a channel no longer configured
        try:
            channel = self._channel(delivery.channel)
            kind = channel.kind
            assert self._http is not None
            await send(
                channel, delivery.payload, http=self._http, smtp=self.config.smtp, env=self.env
            )
        except DeliveryFailed as exc:
            error = str(exc) or type(exc).__name__
        except Exception as exc:  # a bug in a sender: logged, and retried like a failure
            log.exception("alert delivery raised", extra={"channel": delivery.channel})
            error = f"{type(exc).__name__}"
        attempts = delivery.attempts + 1
        retry_at: datetime | None = None
        now = self._clock.now()
        if error is not None and attempts < self.config.max_attempts:
            retry_at = now + retry_delay(attempts, self.config.backoff_s, self.config.max_backoff_s)
        await store.finish(delivery.delivery_id, self.owner, now, error=error, retry_at=retry_at)
        outcome = "delivered" if error is None else "retrying" if retry_at else "failed"
        for watcher in self.watchers:
            watcher.alert_delivery(kind, outcome)
        if error is not None:
            log.warning(
                "alert delivery failed",
                extra={"channel": delivery.channel, "attempts": attempts, "error": error},
            )

    def _channel(self, name: str) -> ChannelConfig:
        if name.startswith(CONTACT_PREFIX):
            contact, _, index = name[len(CONTACT_PREFIX) :].rpartition("#")
            found = self.config.contacts.get(contact, [])
            if index.isdigit() and int(index) < len(found):
                return found[int(index)]
        elif name in self.config.channels:
            return self.config.channels[name]
        raise DeliveryFailed(f"channel {name!r} is no longer configured")

    # -- forecasts ---------------------------------------------------------------------------

    async def project(self) -> int:
        """Raise "projected to exceed" for the members whose forecast says so; how many."""
        if self._views is None:
            return 0
        rules = [rule for rule in self.config.budgets if rule.projected]
        if not rules:
            return 0
        views = await self._views()
        now = self._clock.now()
        window = timedelta(seconds=self.config.burn_window_s)
        raised = 0
        found_all = await forecasts(self._storage, views, now, window)
        for view, found in zip(views, found_all, strict=True):
            if found is None or not found.exceeds or view.state.spent >= view.state.limit:
                continue
            alert = projected_alert(view, found, rules, self.config, now)
            if alert is not None and await self.raise_alert(alert) is not None:
                raised += 1
        return raised


def projected_alert(
    view: BudgetView,
    found: Forecast,
    rules: Sequence[BudgetAlertConfig],
    config: AlertsConfig,
    now: datetime,
) -> Alert | None:
    budget, member = view.budget, view.member
    channels: list[str] = []
    contacts: list[str] = []
    for rule in rules:
        if rule.budget not in ("*", budget.name):
            continue
        channels += rule.channels
        contact = f"{budget.target.scope.value}:{member}"
        if rule.notify_member and contact in config.contacts:
            contacts.append(contact)
    cap_at, burn_per_hour = found.cap_at, found.burn_per_hour
    if not (channels or contacts) or cap_at is None:
        return None
    unit = budget.unit
    ref = view.state.ref
    resets = ref.window.resets_at.isoformat() if ref.window.resets_at else "-"
    text = (
        f"Budget {budget.name} ({budget.target.scope.value} '{member}') has spent "
        f"{unit.render(view.state.spent)} of {unit.render(view.state.limit)}; at "
        f"{unit.render(burn_per_hour)} an hour it reaches its limit at {cap_at.isoformat()}, "
        f"before the period resets at {resets}."
    )
    return Alert(
        "projected",
        budget.name,
        member,
        ref.window.since_ms,
        "",
        now,
        f"{budget.name}: {member} is projected to exceed its limit",
        text,
        (
            ("budget", budget.name),
            ("member", member),
            ("spent", unit.render(view.state.spent)),
            ("limit", unit.render(view.state.limit)),
            ("burn_per_hour", unit.render(burn_per_hour)),
            ("cap_at", cap_at.isoformat()),
            ("resets_at", resets),
        ),
        tuple(dict.fromkeys(contacts)),
        tuple(dict.fromkeys(channels)),
    )
