"""Forecasts of a budget member: how fast it spends, where that leads by the end of the
period, and when the limit is reached. Pure: time and amounts are passed in, in the
budget's unit (nano-dollars or tokens), integers throughout.

The burn rate is measured over a *recent window*: what the member spent over the last
``window`` (or since its period began, if that is shorter). Projected at that rate:

    projected = spent + recent * remaining / observed
    cap_at    = now + (limit - spent) * observed / recent     (rounded up, to the ms)

where ``observed`` is the length of the window measured and ``remaining`` the time left
until the period resets. Amounts round up (a forecast errs toward warning early).
A period that never resets (``lifetime``) or a rolling window projects no end-of-period
spend; a member spending nothing reaches its cap never (``cap_at`` None), and so does one
whose cap lies past the year 9999 at its rate.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_MS = timedelta(milliseconds=1)
HOUR_MS = 3_600_000


@dataclass(frozen=True, slots=True)
class Forecast:
    recent: int  # spent over the measured window
    observed_ms: int  # how long that window is (0: the period just began)
    burn_per_hour: int  # recent spend scaled to an hour, rounded up
    projected: int | None  # spend at the end of the period at this rate (None: no end)
    cap_at: datetime | None  # when spent reaches the limit at this rate (None: never)
    exceeds: bool  # the cap is reached before the period ends

    def to_json(self) -> dict[str, object]:
        return {
            "recent": self.recent,
            "window_s": self.observed_ms // 1000,
            "burn_per_hour": self.burn_per_hour,
            "projected": self.projected,
            "cap_at": self.cap_at.isoformat() if self.cap_at else None,
            "exceeds": self.exceeds,
        }


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _ms(delta: timedelta) -> int:
    return delta // _MS


def _later(now: datetime, ms: int) -> datetime | None:
    """``ms`` milliseconds after ``now``; None past the last time a `datetime` holds (year
    9999): a large limit at a slow burn (a $1,000 budget, a few cheap embeddings in the
    last hour) is reached never, as far as any report can tell."""
    try:
        return now + ms * _MS
    except OverflowError:
        return None


def forecast(
    *,
    spent: int,
    limit: int,
    recent: int,
    window: timedelta,
    now: datetime,
    since: datetime,
    resets_at: datetime | None,
) -> Forecast:
    """``recent``: what was spent over ``[max(since, now - window), now)``; ``since``: the
    period's start; ``resets_at``: its end (None: it never resets, or it rolls)."""
    observed = max(0, _ms(now - max(since, now - window)))
    if observed == 0 or recent <= 0:
        burn = 0
        projected = spent if resets_at is not None else None
        cap_at = now if spent >= limit else None
    else:
        burn = _ceil_div(recent * HOUR_MS, observed)
        if resets_at is not None:
            remaining = max(0, _ms(resets_at - now))
            projected = spent + _ceil_div(recent * remaining, observed)
        else:
            projected = None
        if spent >= limit:
            cap_at = now
        else:
            cap_at = _later(now, _ceil_div((limit - spent) * observed, recent))
    exceeds = cap_at is not None and (resets_at is None or cap_at < resets_at)
    if resets_at is None and cap_at is not None and cap_at > now:
        exceeds = False  # a window that rolls or never resets: no "before the end"
    return Forecast(recent, observed, burn, projected, cap_at, exceeds)
