"""The demo's guards, as the ledger and the budget counters tell them: what spendgate refused
before the expensive call (`spendgate.demo.view.Blocks`, from ``blocks_report``), which
requests a budget clamped, what clients sat out and retried, and where each budget stands.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from spendgate.clock import Clock
from spendgate.config import Config
from spendgate.config.build import build_budget_book, build_model_table
from spendgate.demo.view import Blocks
from spendgate.domain.budget_state import model_prices
from spendgate.domain.budgets import BudgetBook, Kind, Unit
from spendgate.money import NANOS_PER_DOLLAR, format_dollars
from spendgate.pricing.catalog import build_price_book
from spendgate.services.budgets import BudgetService
from spendgate.storage import Storage
from spendgate.text import escape

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class BudgetLine:
    name: str
    member: str
    spent: str
    limit: str
    remaining: str
    used_bp: int
    state: str
    resets_at: datetime | None


@dataclass(frozen=True, slots=True)
class Guards:
    budgets: tuple[BudgetLine, ...] = ()
    clamped: int = 0  # requests a budget let through with a lower output ceiling
    lowest_ceiling: int | None = None  # the lowest ceiling a budget clamped one to
    asked_ceiling: int | None = None  # the largest ceiling a clamped request asked for
    served_on_retry: int = 0  # requests served on an SDK retry (x-stainless-retry-count > 0)


async def read_guards(storage: Storage, clock: Clock, config: Config) -> Guards:
    """Budget counters through `BudgetService` (as ``spendgate budgets``), and the clamped
    and retried requests from the ledger's rows."""
    book = build_budget_book(config)
    models = model_prices(build_model_table(config, build_price_book(config)))
    service = BudgetService(
        storage, book, clock, models=models, min_output=config.budget_settings.min_output_tokens
    )
    views = await service.overview()
    budgets = tuple(
        BudgetLine(
            name=view.budget.name,
            member=view.member,
            spent=_amount(view.budget.unit, view.state.spent),
            limit=_amount(view.budget.unit, view.state.limit),
            remaining=_amount(view.budget.unit, max(0, view.state.room)),
            used_bp=view.state.used_bp,
            state=view.condition,  # as `spendgate budgets` shows it
            resets_at=view.state.ref.window.resets_at,
        )
        for view in views
        if view.budget.kind is Kind.BUDGET
    )
    rows = await storage.ledger(_EPOCH, clock.now() + timedelta(seconds=1))
    served = [row for row in rows if row.blocked_by is None]
    clamped = [row for row in served if row.clamped_from is not None]
    return Guards(
        budgets=budgets,
        clamped=len(clamped),
        lowest_ceiling=min((r.output_ceiling or 0 for r in clamped), default=None),
        asked_ceiling=max((r.clamped_from or 0 for r in clamped), default=None),
        served_on_retry=sum(1 for row in served if row.retry_count > 0),
    )


def what_stopped(name: str, book: BudgetBook) -> str:
    """What kind of guard a block row names, and how clients were told."""
    if name == "loop-detection":
        return "the same request again: 429 loop_detected, not retried"
    if name == "circuit-breaker":
        return "upstream failing: 503, retry after the cool-down"
    if name.startswith("request-cap:"):
        return "one request too big or too dear: 413"
    budget = book.get(name)
    if budget is not None and budget.kind is Kind.LIMIT:
        return "rate limit: 429 with retry-after"
    return "budget exhausted: 402 (Anthropic) / 429 (OpenAI), not retried"


def money(amount_nanos: int) -> str:
    return format_dollars(amount_nanos, 4)


def plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _amount(unit: Unit, amount: int) -> str:
    if unit is Unit.NANOS:
        return f"${Decimal(amount) / NANOS_PER_DOLLAR:,.4f}"
    return unit.render(amount)


def _state(state: str) -> str:
    if state == "refusing":  # room left, but less than a request's worst case
        return "refusing: what is left is less than a request's worst case"
    return state


def live_line(blocks: Blocks) -> str:
    """One line for the live view: what was stopped so far."""
    if not blocks.blocked:
        return "Nothing refused yet: budgets, rate limits and loop detection are watching."
    parts = ", ".join(f"{escape(line.name)} {line.blocked}" for line in blocks.refusals)
    return (
        f"Refused before the call: {plural(blocks.blocked, 'request')} "
        f"(worth up to {money(blocks.would_cost_nanos)}): {parts}"
    )


def summary_lines(blocks: Blocks, guards: Guards, book: BudgetBook) -> list[str]:
    """The closing summary's guard section; each refusal line is one ledger group. The
    names in it are escaped (`spendgate.text.escape`): they come from the ledger."""
    lines = [
        "Stopped before the expensive call (the ledger's block rows, as `spendgate blocks` "
        "shows them):",
        f"  Refused {plural(blocks.requests, 'distinct request')} (retries counted once), "
        f"about {format_dollars(blocks.estimate_nanos, 6)} at their real input rate and "
        "typical output",
        f"  ({plural(blocks.blocked, 'refusal')} in all, retries included: "
        f"{format_dollars(blocks.would_cost_nanos, 6)} had each cost its worst case)",
    ]
    width = max((len(line.name) for line in blocks.refusals), default=0)
    for line in blocks.refusals:
        lines.append(
            f"    {line.name:<{width}}  {line.blocked:>5}  "
            f"{format_dollars(line.would_cost_nanos, 6):>12}  {what_stopped(line.name, book)}"
        )
    if guards.served_on_retry:
        lines.append(
            f"  {plural(guards.served_on_retry, 'rate-limited request')} sent again after "
            "retry-after and served."
        )
    if guards.clamped:
        lines.append(
            f"  Clamped {plural(guards.clamped, 'request')} to what a budget could still "
            f"afford: output ceilings lowered from {guards.asked_ceiling:,} to as few as "
            f"{guards.lowest_ceiling:,} tokens."
        )
    for line in blocks.shadows:
        lines.append(
            f"  Shadow: {line.name} would have refused {plural(line.shadow_hits, 'request')} "
            f"(they cost {money(line.shadow_cost_nanos)}); counted, never blocked."
        )
    refused = {line.name: line.blocked for line in blocks.refusals}
    for budget in guards.budgets:
        resets = f"{budget.resets_at:%Y-%m-%d %H:%M} UTC" if budget.resets_at else "never"
        lines.append(
            f"  Budget {budget.name} ({budget.member}): {budget.spent} of {budget.limit} "
            f"spent, {budget.used_bp / 100:.1f}% used ({_state(budget.state)}); "
            f"resets {resets}."
        )
        if refused.get(budget.name):
            lines.append(
                f"    It refused {plural(refused[budget.name], 'request')} whose worst-case input "
                f"plus the minimum output did not fit in what was left (now {budget.remaining}): "
                "a hard cap leaves that last bit unspent rather than risk going over."
            )
    return [escape(line) for line in lines]
