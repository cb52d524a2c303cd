"""`Storage.recent_outputs` returns in the backend exactly what the reference
(`spendgate.domain.refusals.output_samples`) picks from the rows: the newest answered
outputs per (key, model) and per model, refused and failed rows left out, at most
``limit`` each, and `Storage.output_medians` their lower medians; and a refused row's
estimate fields survive the round trip."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from storage_samples import NOW, build_row

from spendgate.domain.ledger import LedgerRow
from spendgate.domain.refusals import medians, output_samples
from spendgate.storage import Storage

KEYS = st.sampled_from(["key_a", "key_b", "key_c"])
MODELS = st.sampled_from(["gpt-4o", "gpt-4o-mini", "claude-haiku-4-5"])


@st.composite
def rows(draw: st.DrawFn) -> LedgerRow:
    refused = draw(st.integers(min_value=0, max_value=5)) == 0
    return build_row(
        ts=NOW + timedelta(seconds=draw(st.integers(min_value=0, max_value=600))),
        key_id=draw(KEYS),
        routed_model=draw(st.none() | MODELS),
        requested_model=draw(MODELS),
        output_tokens=draw(st.integers(min_value=0, max_value=2000)),
        status=draw(st.sampled_from([200, 200, 200, 500, 429])),
        blocked_by="b" if refused else None,
    )


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.lists(rows(), max_size=40),
    pairs=st.lists(st.tuples(KEYS, MODELS), max_size=4, unique=True),
    limit=st.integers(min_value=1, max_value=5),
)
async def test_backend_samples_match_the_reference(
    storage: Storage, batch: list[LedgerRow], pairs: list[tuple[str, str]], limit: int
) -> None:
    for row in batch:
        await storage.record(row)
    since, until = NOW, NOW + timedelta(minutes=5)  # the rows after it are left out
    stored = await storage.ledger(since, until)  # this example's rows and earlier ones
    expected = output_samples(stored, pairs, limit)
    assert await storage.recent_outputs(pairs, since, until, limit) == expected
    assert await storage.output_medians(pairs, since, until, limit) == medians(expected)


async def test_newest_first_and_per_model_across_keys(storage: Storage) -> None:
    for second, key, output in [(1, "k1", 10), (2, "k2", 20), (3, "k1", 30), (4, "k1", 40)]:
        await storage.record(
            build_row(
                ts=NOW + timedelta(seconds=second),
                key_id=key,
                routed_model="m",
                output_tokens=output,
            )
        )
    await storage.record(build_row(ts=NOW, key_id="k1", routed_model="m", blocked_by="x"))
    found = await storage.recent_outputs([("k1", "m")], NOW, NOW + timedelta(minutes=1), 2)
    assert found == {("k1", "m"): [40, 30], (None, "m"): [40, 30]}
    assert await storage.recent_outputs([], NOW, NOW + timedelta(minutes=1), 2) == {}


async def test_a_refused_row_keeps_its_estimate_fields(storage: Storage) -> None:
    row = build_row(
        blocked_by="per-user",
        cost_nanos=0,
        status=429,
        fingerprint="abc123",
        would_cost_nanos=9_000,
        would_input_nanos=700,
        would_output_rate=4_000_000_000,
        would_ceiling=256,
    )
    await storage.record(row)
    assert await storage.ledger(NOW, NOW + timedelta(seconds=1)) == [row]
