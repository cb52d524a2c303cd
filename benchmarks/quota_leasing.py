"""What quota leasing (docs/scaling.md, "Past one Redis") costs in early refusals: a
deterministic simulation of the design, not of running code (leasing is not built).

    python -m benchmarks.quota_leasing [--requests 200000] [--seed 7]

One budget of ``L`` units is split over ``S`` shards. Each shard admits a request only
within its grant (``spent_i + reserved_i + r <= g_i``); when one does not fit it asks the
central grant row for a chunk (``chunk`` times what is still unallocated, at least what the
request lacks), granted only while ``Σ g_i <= L``; every ``RETURN_EVERY`` arrivals each
shard returns the room it holds beyond two chunks. Requests reserve their worst case ``r``
(50 to 5,000 units), stay in flight for the next 64 arrivals, then settle at 20-100 % of
``r``. Traffic goes to the shards uniformly or skewed (80 % to one shard). The same
arrivals are replayed against one global counter (today's single Redis).

Reported: overshoot (always 0: checked at every step), the share of requests refused
while the global counter would have admitted them (the cost of refusing early), and how
much of the budget was spent when the first such refusal came and at the end.
"""

from __future__ import annotations

import argparse
import random
from collections import deque
from dataclasses import dataclass

LIMIT = 10_000_000
IN_FLIGHT = 64
RETURN_EVERY = 500


@dataclass
class Shard:
    grant: int = 0
    spent: int = 0
    reserved: int = 0

    @property
    def room(self) -> int:
        return self.grant - self.spent - self.reserved


@dataclass
class Result:
    early: int = 0  # refused by a shard, admitted by the global counter at that instant
    refused: int = 0
    spent_at_first_early: int | None = None
    spent: int = 0
    requests: int = 0
    global_spent: int = 0
    global_admitted: int = 0


def simulate(shards: int, chunk: float, skew: bool, requests: int, seed: int) -> Result:
    rng = random.Random(seed)
    parts = [Shard() for _ in range(shards)]
    unallocated = LIMIT
    g_spent = g_reserved = 0
    flight: deque[tuple[int, int, int]] = deque()  # (shard, reserved, to settle at)
    g_flight: deque[tuple[int, int]] = deque()
    out = Result(requests=requests)
    for n in range(requests):
        r = rng.randint(50, 5000)
        actual = r * rng.randint(20, 100) // 100
        i = 0 if skew and rng.random() < 0.8 else rng.randrange(shards)
        shard = parts[i]
        if shard.room < r and unallocated > 0:
            want = max(r - shard.room, int(unallocated * chunk))
            given = min(want, unallocated)
            unallocated -= given
            shard.grant += given
        admitted = shard.room >= r
        global_fits = g_spent + g_reserved + r <= LIMIT
        if admitted:
            shard.reserved += r
            flight.append((i, r, actual))
        else:
            out.refused += 1
            if global_fits:
                out.early += 1
                if out.spent_at_first_early is None:
                    out.spent_at_first_early = sum(p.spent for p in parts)
        if global_fits:
            out.global_admitted += 1
            g_reserved += r
            g_flight.append((r, actual))
        if len(flight) > IN_FLIGHT:
            j, held, charged = flight.popleft()
            parts[j].reserved -= held
            parts[j].spent += charged
        if len(g_flight) > IN_FLIGHT:
            held, charged = g_flight.popleft()
            g_reserved -= held
            g_spent += charged
        if n % RETURN_EVERY == 0:
            keep = 2 * int(max(unallocated, 1) * chunk) + 5000
            for p in parts:
                extra = p.room - keep
                if extra > 0:  # lowered locally first, then handed back
                    p.grant -= extra
                    unallocated += extra
        total = sum(p.spent + p.reserved for p in parts)
        assert total <= sum(p.grant for p in parts) <= LIMIT, "overshoot"
        assert sum(p.grant for p in parts) + unallocated == LIMIT
    out.spent = sum(p.spent for p in parts) + sum(a for _, _, a in flight)
    out.global_spent = g_spent + sum(a for _, a in g_flight)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(
        "| shards | chunk | traffic | overshoot | refused early (of those one counter admits) "
        "| spent at first early "
        "refusal | spent at end (leasing) | spent at end (one counter) |"
    )
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    for shards in (2, 4, 8):
        for chunk in (0.05, 0.25):
            for skew in (False, True):
                r = simulate(shards, chunk, skew, args.requests, args.seed)
                first = r.spent_at_first_early
                print(
                    f"| {shards} | {chunk:.0%} | {'80 % to one' if skew else 'uniform'} | 0 | "
                    f"{r.early / r.global_admitted:.2%} | "
                    f"{'none' if first is None else f'{first / LIMIT:.1%}'} | "
                    f"{r.spent / LIMIT:.2%} | {r.global_spent / LIMIT:.2%} |"
                )


if __name__ == "__main__":
    main()
