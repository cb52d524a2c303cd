"""Served and refused rows are added up between reads of the metrics and handed to the
counters when they are read (`Metrics.flush`): what a scrape shows is exactly what one
increment per row would have shown, whatever the interleaving of rows and reads, and
however many label sets pile up between reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from spendgate.domain.ledger import LedgerRow
from spendgate.events import Served
from spendgate.events import metrics as metrics_module
from spendgate.events.metrics import Metrics

NOW = datetime(2026, 12, 7, tzinfo=UTC)


def row(team: str, model: str, tokens: int, cost: int, latency_ms: float = 1.0) -> LedgerRow:
    return LedgerRow(
        "req", NOW, "openai.chat", "key", None, None, team, None, (), model, model, "openai",
        tokens, tokens // 3, 0, tokens // 2, 0, cost, 200, latency_ms, latency_ms / 2, False,
        False, False,
    )  # fmt: skip


def scraped(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            if sample.name.endswith("_created"):
                continue  # when each series began: not a count
            if sample.name == "spendgate_cost_dollars_total" or sample.name.endswith("_sum"):
                out[key] = round(sample.value, 9)  # (float sums, added in another order)
            elif sample.name.startswith("spendgate_"):
                out[key] = sample.value
    return out


rows = st.lists(
    st.tuples(
        st.sampled_from(["ml", "web", ""]),
        st.sampled_from(["gpt-4o-mini", "gpt-4o"]),
        st.integers(0, 5_000),
        st.integers(0, 10**7),
        st.sampled_from([0.0, 1.0, 25.0, 50.0, 99.9, 2_500.0, 7e5]),  # on and off the bounds
        st.booleans(),  # read the metrics after this row
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None)
@given(rows=rows)
def test_reads_show_what_one_increment_per_row_would(
    rows: list[tuple[str, str, int, int, float, bool]],
) -> None:
    deferred, direct = Metrics(), Metrics()
    direct._deferred = False  # one increment per row, as before
    assert deferred._deferred
    for team, model, tokens, cost, latency_ms, read in rows:
        event = Served(row(team, model, tokens, cost, latency_ms), latency_ms / 4)
        deferred(event)
        direct(event)
        if read:
            assert scraped(deferred) == scraped(direct)
    assert scraped(deferred) == scraped(direct)


def test_many_label_sets_between_reads_are_handed_on_as_they_pile_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    metrics = Metrics()
    monkeypatch.setattr(metrics_module, "MAX_SUMS", 3)
    for team in ("a", "b", "c", "d", "e"):
        metrics(Served(row(team, "gpt-4o", 10, 100), None))
        assert len(metrics._sums) <= 3  # bounded: handed on as they pile up
    shown = scraped(metrics)
    served = [v for (name, _), v in shown.items() if name == "spendgate_requests_total"]
    assert sorted(served) == [1.0] * 5
