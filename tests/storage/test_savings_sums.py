"""`Storage.savings` sums in the backend exactly what the reference fold over ledger rows
(`spendgate.domain.savings.savings`) computes: for any mix of routed, fallen-back, refused,
shadowed and unreconciled rows."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW, build_row

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.savings import SavingsBy, from_totals, savings
from spendgate.storage import Storage

TEAMS = st.sampled_from(["core", "web", None])
SERVICES = st.sampled_from(["search", "bot", None])
KINDS = st.sampled_from([None, "alias", "rewrite", "downgrade"])
MONEY = st.integers(min_value=0, max_value=5_000_000)


@st.composite
def requests(draw: st.DrawFn) -> list[LedgerRow]:
    """One request's rows: zero or more failed attempts, then an answer (or a refusal)."""
    base = build_row()
    team, service = draw(TEAMS), draw(SERVICES)
    failures = draw(st.integers(min_value=0, max_value=2))
    first = draw(st.integers(min_value=0, max_value=1))  # attempt 0 may have left no row
    kind = draw(KINDS)
    shadow = draw(st.sampled_from([None, "try-mini", "try-haiku"]))
    rows = []
    for index, attempt in enumerate(range(first, first + failures + 1)):
        last = index == failures
        cost = draw(MONEY)
        rows.append(
            build_row(
                request_id=base.request_id if attempt == 0 else f"{base.request_id}-{attempt}",
                attempt=attempt,
                team=team,
                service=service,
                status=draw(st.sampled_from([200, 200, 503]))
                if last
                else draw(st.sampled_from([429, 500, 503, 504])),
                cost_nanos=cost,
                route_kind=kind,
                baseline_cost_nanos=draw(st.none() | MONEY),
                shadow_rule=shadow,
                shadow_cost_nanos=draw(st.none() | MONEY) if shadow else None,
                unreconciled=draw(st.booleans()),
                ts=NOW + timedelta(seconds=draw(st.integers(min_value=0, max_value=3600))),
            )
        )
    if draw(st.integers(min_value=0, max_value=9)) == 0:  # now and then, a refusal
        rows = [build_row(team=team, service=service, blocked_by="b", cost_nanos=0, status=429)]
    return rows


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(batches=st.lists(requests(), max_size=25))
async def test_backend_sums_match_the_reference_fold(
    storage: Storage, batches: list[list[LedgerRow]]
) -> None:
    rows = [row for batch in batches for row in batch]
    for row in rows:
        await storage.record(row)
    since, until = NOW, NOW + timedelta(hours=2)
    stored = await storage.ledger(since, until)  # this example's rows and earlier ones
    for by in SavingsBy:
        groups, shadow = await storage.savings(since, until, by)
        assert from_totals(groups, shadow) == savings(stored, by)
