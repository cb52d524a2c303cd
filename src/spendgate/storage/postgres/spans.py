"""Which parts of a report's period the refusal rollups answer, and which the ledger's
rows must (migration 0006). Pure: no IO here.

An hour's rollup holds its refused rows counted as distinct or not against every refused
row, as the roll-up job last saw them. It answers for that hour in a period when

* the hour lies wholly inside the period;
* no refused row is pending (written since the job last recomputed the hours it can
  change: its own, and the next one when it lies within the retry window of its end);
* the period does not start within the retry window before it: a row that an earlier
  row before the period makes a repeat is distinct in the period (only the first whole
  hour can be so).

Everything else is read raw, as ranges that are merged when they touch.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from spendgate.domain.totals import HOUR_MS

Range = tuple[int, int]  # [low, high) in epoch ms


@dataclass(frozen=True, slots=True)
class Spans:
    rolled: list[Range]  # whole hours read from the rollups, as ranges
    raw: list[Range]  # ranges read from the ledger, in order, an hour or more apart


def hour_of(ts_ms: int) -> int:
    return ts_ms - ts_ms % HOUR_MS


def changed_hours(pending_ts: Iterable[int], window_ms: int) -> set[int]:
    """The hours whose rollups refused rows at these times can change: their own, and the
    one the retry window after them reaches into."""
    found: set[int] = set()
    for ts in pending_ts:
        found.add(hour_of(ts))
        found.add(hour_of(ts + window_ms))
    return found


def _add(ranges: list[Range], low: int, high: int) -> None:
    if low >= high:
        return
    if ranges and ranges[-1][1] == low:
        ranges[-1] = (ranges[-1][0], high)
    else:
        ranges.append((low, high))


def hour_ranges(hours: Iterable[int]) -> list[Range]:
    """Hours as ranges, those that touch merged."""
    ranges: list[Range] = []
    for hour in sorted(hours):
        _add(ranges, hour, hour + HOUR_MS)
    return ranges


def plan(since_ms: int, until_ms: int, dirty: set[int], window_ms: int) -> Spans:
    """The rollup hours and raw ranges that make up ``[since_ms, until_ms)`` (the retry
    window is shorter than an hour)."""
    rolled: list[Range] = []
    raw: list[Range] = []
    first = -(-since_ms // HOUR_MS) * HOUR_MS
    end = until_ms // HOUR_MS * HOUR_MS
    if first >= end:
        _add(raw, since_ms, until_ms)
        return Spans(rolled, raw)
    _add(raw, since_ms, first)
    read_raw = {hour for hour in dirty if first <= hour < end}
    if first < since_ms + window_ms:
        read_raw.add(first)
    at = first
    for hour in sorted(read_raw):
        _add(rolled, at, hour)
        _add(raw, hour, hour + HOUR_MS)
        at = hour + HOUR_MS
    _add(rolled, at, end)
    _add(raw, end, until_ms)
    return Spans(rolled, raw)


def scans(ranges: list[Range], since_ms: int, window_ms: int) -> list[tuple[int, int, int]]:
    """Each raw range as ``(scan_low, low, high)``: its rows are counted, and those of the
    retry window before it (inside the period) are read to tell repeats. Ranges from
    `plan` are an hour or more apart, so the scans do not overlap."""
    return [(max(since_ms, low - window_ms), low, high) for low, high in ranges]
