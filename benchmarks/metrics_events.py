"""What the metrics subscriber costs a served request, on the request path.

    python -m benchmarks.metrics_events [--rounds 9] [--events 20000]

Three variants side by side, in interleaved rounds (each round times every variant, best of
5 runs of ``--events`` events; the order rotates every round), medians reported:

* ``timings``: a `Served` event without the upstream time (no added-latency observation);
* ``overhead``: the same with ``upstream_ms`` (what the pipeline emits);
* ``user+key``: that, with ``metrics.labels: [user, key]`` opted in;
* ``one by one``: ``overhead`` with every counter and histogram incremented as the event
  comes (how the subscriber worked before it added them up between reads);
* ``+ flush/1000``: ``overhead`` with the sums handed on every 1,000 events (a scrape's
  share at 1,000 requests a second scraped every second).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime

from spendgate.config.metrics import MetricsConfig
from spendgate.domain.ledger import LedgerRow
from spendgate.events import Served
from spendgate.events.metrics import Metrics

ROW = LedgerRow(
    request_id="req_1",
    ts=datetime(2026, 1, 1, tzinfo=UTC),
    surface="openai.chat",
    key_id="key_1",
    user="ada",
    service="search",
    team="ml",
    org="acme",
    tags=(),
    requested_model="gpt-4o-mini",
    served_model="gpt-4o-mini",
    provider="openai",
    input_tokens=100,
    cached_input_tokens=20,
    cache_write_tokens=0,
    output_tokens=50,
    reasoning_tokens=10,
    cost_nanos=123_456,
    status=200,
    latency_ms=120.5,
    ttfb_ms=30.25,
    streamed=False,
    client_disconnected=False,
    usage_estimated=False,
)


def variants() -> dict[str, Callable[[], None]]:
    plain, timed, personal = Metrics(), Metrics(), Metrics(MetricsConfig(labels=["user", "key"]))
    direct, flushed = Metrics(), Metrics()
    direct._deferred = False
    without, with_upstream = Served(ROW), Served(ROW, upstream_ms=110.0)
    seen = [0]

    def read_every_thousand() -> None:
        flushed(with_upstream)
        seen[0] += 1
        if seen[0] % 1000 == 0:
            flushed.flush()

    return {
        "timings": lambda: plain(without),
        "overhead": lambda: timed(with_upstream),
        "user+key": lambda: personal(with_upstream),
        "one by one": lambda: direct(with_upstream),
        "+ flush/1000": read_every_thousand,
    }


def best_us(run: Callable[[], None], events: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(events):
            run()
        best = min(best, time.perf_counter() - started)
    return best / events * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--events", type=int, default=20_000)
    args = parser.parse_args()
    runs = variants()
    names = list(runs)
    found: dict[str, list[float]] = {name: [] for name in names}
    for index in range(args.rounds):
        order = names[index % len(names) :] + names[: index % len(names)]
        for name in order:
            found[name].append(best_us(runs[name], args.events))
    base = statistics.median(found["timings"])
    for name in names:
        value = statistics.median(found[name])
        print(f"{name:10} {value:6.2f} µs/event  ({value / base:.2f}x)")


if __name__ == "__main__":
    main()
