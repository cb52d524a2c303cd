"""What the demo shows, read from the gateway's own ledger through `usage_report` and
`blocks_report`.

Every number on screen comes from the same query path as ``spendgate usage``,
``spendgate blocks`` and ``GET /admin/usage``: what is shown is what the ledger says.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from spendgate.clock import Clock
from spendgate.domain.reports import share_bp, top_spenders
from spendgate.services.reports import UsageReport, blocks_report, usage_report
from spendgate.storage import Storage, UsageGroup

PERIOD = "all"  # the demo's ledger is its own (a fresh file unless --db names another)
TOP_USERS = 8
RATE_WINDOW_S = 3.0


@dataclass(frozen=True, slots=True)
class Pareto:
    """The top N named users and the share of the whole bill they drive."""

    top: int
    users: int
    share_bp: int


@dataclass(frozen=True, slots=True)
class BlockLine:
    """What one budget, limit or guard refused (or, shadow, would have refused)."""

    name: str
    blocked: int
    would_cost_nanos: int  # the refused requests' worst cases: what they could have cost
    shadow_hits: int
    shadow_cost_nanos: int  # what the requests a shadow limit let through really cost


@dataclass(frozen=True, slots=True)
class Blocks:
    blocked: int = 0
    would_cost_nanos: int = 0
    lines: tuple[BlockLine, ...] = ()
    requests: int = 0  # distinct requests among the refusals (retries counted once)
    estimate_nanos: int = 0  # what they would most likely have cost

    @property
    def refusals(self) -> tuple[BlockLine, ...]:
        return tuple(line for line in self.lines if line.blocked)

    @property
    def shadows(self) -> tuple[BlockLine, ...]:
        return tuple(line for line in self.lines if line.shadow_hits)


def _int(value: object) -> int:
    assert isinstance(value, int), value
    return value


async def read_blocks(storage: Storage, clock: Clock) -> Blocks:
    """The ledger's block rows, per name, through the report behind ``spendgate blocks``."""
    report = await blocks_report(storage, clock, period=PERIOD)
    rows = report["data"]
    assert isinstance(rows, list)
    lines = tuple(
        BlockLine(
            name=str(row["name"]),
            blocked=_int(row["blocked"]),
            would_cost_nanos=_int(row["blocked_would_cost_nanos"]),
            shadow_hits=_int(row["shadow_hits"]),
            shadow_cost_nanos=_int(row["shadow_cost_nanos"]),
        )
        for row in rows
    )
    ranked = tuple(sorted(lines, key=lambda line: (-line.blocked, -line.shadow_hits, line.name)))
    return Blocks(
        _int(report["blocked"]),
        _int(report["blocked_would_cost_nanos"]),
        ranked,
        requests=_int(report["requests"]),
        estimate_nanos=_int(report["estimate_nanos"]),
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    elapsed_s: float
    duration_s: float
    rate: float  # requests per second, over the last few seconds
    by_team: UsageReport
    by_user: UsageReport
    by_model: UsageReport
    blocks: Blocks = field(default_factory=Blocks)
    phase: str = "running"

    @property
    def total_cost_nanos(self) -> int:
        return self.by_team.top.total_cost_nanos

    @property
    def requests(self) -> int:
        return sum(group.requests for group in self.by_team.groups)

    @property
    def tokens(self) -> int:
        return sum(group.input_tokens + group.output_tokens for group in self.by_team.groups)

    @property
    def errors(self) -> int:
        return sum(group.errors for group in self.by_team.groups)

    def pareto(self) -> Pareto:
        """The top fifth of the named users (at least one), as the seed frames it."""
        named = [group for group in self.by_user.groups if group.group is not None]
        n = max(1, len(named) // 5)
        ranked = top_spenders(named, n)
        top_cost = sum(r.usage.cost_nanos for r in ranked.top)
        total = self.by_user.all_cost_nanos  # of the whole bill, services included
        return Pareto(len(ranked.top), len(named), share_bp(top_cost, total))


@dataclass(slots=True)
class RateMeter:
    """Requests per second from successive request counts (ledger rows, not client calls)."""

    window_s: float = RATE_WINDOW_S
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, now: float, requests: int) -> float:
        self._samples.append((now, requests))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()
        then, before = self._samples[0]
        return (requests - before) / (now - then) if now > then else 0.0


def total_requests(groups: list[UsageGroup]) -> int:
    return sum(group.requests for group in groups)


async def read_snapshot(
    storage: Storage,
    clock: Clock,
    *,
    elapsed_s: float,
    duration_s: float,
    rate: RateMeter | None = None,
    phase: str = "running",
) -> Snapshot:
    """Spend by team, user and model, and what was refused; ``rate`` None: the average over
    ``elapsed_s``."""
    reports = [
        await usage_report(storage, clock, group_by=group_by, period=PERIOD, top=TOP_USERS)
        for group_by in ("team", "user", "model")
    ]
    by_team, by_user, by_model = reports
    requests = total_requests(by_team.groups)
    if rate is not None:
        per_second = rate.add(clock.monotonic(), requests)
    else:
        per_second = requests / elapsed_s if elapsed_s > 0 else 0.0
    return Snapshot(
        elapsed_s=elapsed_s,
        duration_s=duration_s,
        rate=per_second,
        by_team=by_team,
        by_user=by_user,
        by_model=by_model,
        blocks=await read_blocks(storage, clock),
        phase=phase,
    )
