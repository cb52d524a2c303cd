"""What refused requests were worth, realistically, and how many distinct requests they
were. Pure: folds refused ledger rows and samples of served output sizes.

A refused row's worst case (``would_cost_nanos``) is what admission reserved against:
every input token at the dearest input-side rate (a 1-hour cache write), the whole output
ceiling. Summed over refusals it says what blocking *could* have saved, not what it did.
The **estimate** prices each distinct refused request as it would most likely have been
billed:

* input: the body's counted input tokens at the model's input rate
  (``would_input_nanos``, recorded at the refusal);
* output: the caller's (key's) median output tokens on that model over its last
  `RECENT_OUTPUTS` answered requests in the `SAMPLE_SPAN` (30 days) before the period's
  end; else the median of every
  caller on that model; else `DEFAULT_OUTPUT_TOKENS`; never more than the request's own
  ceiling; at the model's output rate, times its choices (``would_output_rate``).

Rows refused before spendgate recorded these (no output rate, no input price) count at
their worst case.

**Distinct requests**: a refusal is a *repeat*, counted in the refusals but not as a
request, when it is an SDK's retry (``retry_count`` > 0, from ``x-stainless-retry-count``),
a later attempt of a request already refused, or the same content (fingerprint) from the
same key within `RETRY_WINDOW` of the previous refusal of it (chained: a burst of resends
is one request). Repeats add nothing to the estimate: had the first been served, the
client would not have sent them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from spendgate.domain.ledger import LedgerRow
from spendgate.money import Nanos, token_cost

RETRY_WINDOW = timedelta(seconds=5)
DEFAULT_OUTPUT_TOKENS = 500
RECENT_OUTPUTS = 100
SAMPLE_SPAN = timedelta(days=30)  # how far before the period's end samples are looked for

CallerModel = tuple[str | None, str]  # (key id, or None for every caller; model)


@dataclass(frozen=True, slots=True)
class RefusalGroup:
    """What one budget, limit or breaker refused: rows, distinct requests, and their cost."""

    name: str
    refusals: int = 0  # refused rows, retries included
    distinct: int = 0  # distinct requests among them
    worst_case_nanos: int = 0  # the worst cases of every refused row
    distinct_worst_case_nanos: int = 0  # ... of the distinct requests only
    estimate_nanos: int = 0  # what the distinct requests would most likely have cost


def model_of(row: LedgerRow) -> str:
    """The gateway model a row was (or would have been) served by."""
    return row.routed_model or row.requested_model


def median(values: Sequence[int]) -> int:
    """The lower median (an integer, no averaging)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def typical_output(samples: Mapping[CallerModel, Sequence[int]], key_id: str, model: str) -> int:
    """The output tokens a request of ``key_id`` on ``model`` typically gets."""
    for who in ((key_id, model), (None, model)):
        found = samples.get(who)
        if found:
            return median(found)
    return DEFAULT_OUTPUT_TOKENS


def estimate(row: LedgerRow, samples: Mapping[CallerModel, Sequence[int]]) -> int:
    """A refused row's realistic cost (its worst case where the row predates estimates)."""
    if row.would_output_rate == 0 and row.would_input_nanos == 0:
        return row.would_cost_nanos
    output = typical_output(samples, row.key_id, model_of(row))
    if row.would_ceiling > 0:
        output = min(output, row.would_ceiling)
    return row.would_input_nanos + token_cost(output, Nanos(row.would_output_rate))


def request_of(row: LedgerRow) -> str:
    return row.request_id.removesuffix(f"-{row.attempt}") if row.attempt else row.request_id


def repeats(rows: Iterable[LedgerRow], window: timedelta = RETRY_WINDOW) -> set[str]:
    """Request ids of the refused rows that repeat an earlier refusal (see the module doc)."""
    seen_requests: set[str] = set()
    last_seen: dict[tuple[str, str], datetime] = {}
    found: set[str] = set()
    # at one instant an original comes before its retries and later attempts
    for row in sorted(rows, key=lambda r: (r.ts, r.retry_count, r.attempt, r.request_id)):
        request = request_of(row)
        repeat = row.retry_count > 0 or request in seen_requests
        if row.fingerprint is not None:
            key = (row.key_id, row.fingerprint)
            previous = last_seen.get(key)
            if previous is not None and row.ts - previous <= window:
                repeat = True
            last_seen[key] = row.ts
        seen_requests.add(request)
        if repeat:
            found.add(row.request_id)
    return found


def refusal_groups(
    rows: Iterable[LedgerRow], samples: Mapping[CallerModel, Sequence[int]]
) -> list[RefusalGroup]:
    """Per name of what refused (``blocked_by``), by name: refusals, distinct requests,
    worst cases and the estimate. Rows that were not refused are skipped."""
    refused = [row for row in rows if row.blocked_by is not None]
    repeated = repeats(refused)
    sums: dict[str, list[int]] = {}
    for row in refused:
        assert row.blocked_by is not None
        values = sums.setdefault(row.blocked_by, [0] * 5)
        values[0] += 1
        values[2] += row.would_cost_nanos
        if row.request_id not in repeated:
            values[1] += 1
            values[3] += row.would_cost_nanos
            values[4] += estimate(row, samples)
    return [RefusalGroup(name, *values) for name, values in sorted(sums.items())]


@dataclass(frozen=True, slots=True, order=True)
class RefusalCombo:
    """The distinct refused requests of a period that share everything their estimate
    depends on but the caller's typical output: what refused them, the caller, the model,
    the output ceiling and the output rate. The unit the backends roll up (per hour on
    SQLite) and sum, so that a report reads these instead of every refused row."""

    name: str
    key_id: str
    model: str
    ceiling: int
    rate: int
    requests: int  # distinct requests
    worst_case_nanos: int  # their worst cases
    fixed_nanos: int  # their estimates' part that needs no sample (`fixed_part`)


def fixed_part(row: LedgerRow) -> int:
    """What a refused row's estimate is without its output part: its input part, or its
    whole worst case for a row refused before estimates were recorded."""
    if row.would_output_rate == 0 and row.would_input_nanos == 0:
        return row.would_cost_nanos
    return row.would_input_nanos


def refusal_combos(rows: Iterable[LedgerRow]) -> list[RefusalCombo]:
    """The reference fold the backends are held to: the refused rows among ``rows`` that
    are not repeats (`repeats`, chained over ``rows`` alone), summed per combination,
    sorted."""
    refused = [row for row in rows if row.blocked_by is not None]
    repeated = repeats(refused)
    sums: dict[tuple[str, str, str, int, int], list[int]] = {}
    for row in refused:
        if row.request_id in repeated:
            continue
        assert row.blocked_by is not None
        combo = (row.blocked_by, row.key_id, model_of(row), row.would_ceiling)
        values = sums.setdefault((*combo, row.would_output_rate), [0, 0, 0])
        values[0] += 1
        values[1] += row.would_cost_nanos
        values[2] += fixed_part(row)
    return [RefusalCombo(*combo, *values) for combo, values in sorted(sums.items())]


def combo_pairs(combos: Iterable[RefusalCombo]) -> list[tuple[str, str]]:
    """The (key, model) pairs whose output samples the estimate of ``combos`` needs."""
    return sorted({(c.key_id, c.model) for c in combos if c.requests and c.rate})


def estimate_groups(
    combos: Iterable[RefusalCombo], samples: Mapping[CallerModel, Sequence[int]]
) -> dict[str, RefusalGroup]:
    """Per name: the distinct requests, their worst cases and their estimate, as
    `refusal_groups` gives them from the rows (its ``refusals`` and ``worst_case_nanos``,
    of every refused row, are left 0: `Storage.blocks` has them)."""
    typical = {who: median(found) for who, found in samples.items() if found}
    return estimate_sums(
        (
            (
                c.name,
                c.key_id,
                c.model,
                c.ceiling,
                c.rate,
                c.requests,
                c.worst_case_nanos,
                c.fixed_nanos,
            )
            for c in combos
        ),
        typical,
    )


ComboSums = tuple[str, str, str, int, int, int, int, int]  # a RefusalCombo's fields


def estimate_sums(
    parts: Iterable[ComboSums], typical: Mapping[CallerModel, int]
) -> dict[str, RefusalGroup]:
    """`estimate_groups` over parts of combinations (`RefusalCombo`'s fields as a tuple),
    a combination in as many parts as come, with the medians (`medians`) instead of the
    samples. The estimate is linear in a combination's requests and fixed parts, so parts
    sum to what their combination gives; names whose requests sum to 0 are left out."""
    outputs: dict[tuple[str, str, int], int] = {}
    sums: dict[str, list[int]] = {}
    for name, key_id, model, ceiling, rate, requests, worst, fixed in parts:
        values = sums.get(name)
        if values is None:
            values = sums[name] = [0, 0, 0]
        values[0] += requests
        values[1] += worst
        values[2] += fixed
        if requests and rate:
            output = outputs.get((key_id, model, ceiling))
            if output is None:
                output = _typical(typical, key_id, model)
                if ceiling > 0:
                    output = min(output, ceiling)
                outputs[(key_id, model, ceiling)] = output
            values[2] += requests * token_cost(output, Nanos(rate))
    return {
        name: RefusalGroup(name, 0, requests, 0, worst, estimated)
        for name, (requests, worst, estimated) in sorted(sums.items())
        if requests
    }


def _typical(typical: Mapping[CallerModel, int], key_id: str, model: str) -> int:
    found = typical.get((key_id, model))
    if found is None:
        found = typical.get((None, model))
    return DEFAULT_OUTPUT_TOKENS if found is None else found


def callers_and_models(rows: Iterable[LedgerRow]) -> list[tuple[str, str]]:
    """The (key, model) pairs of the refused rows that need an output sample."""
    pairs = {
        (row.key_id, model_of(row))
        for row in rows
        if row.blocked_by is not None and (row.would_output_rate or row.would_input_nanos)
    }
    return sorted(pairs)


def medians(samples: Mapping[CallerModel, Sequence[int]]) -> dict[CallerModel, int]:
    """The reference for `Ledger.output_medians`: each non-empty sample's (lower) median.
    `typical_output` over ``{who: [m]}`` is `typical_output` over the samples."""
    return {who: median(found) for who, found in samples.items() if found}


def output_samples(
    served: Iterable[LedgerRow], pairs: Sequence[tuple[str, str]], limit: int = RECENT_OUTPUTS
) -> dict[CallerModel, list[int]]:
    """The reference for `Ledger.recent_outputs`: for each (key, model) of ``pairs`` and
    each of their models across all keys, the output tokens of the last ``limit``
    answered requests (status < 400, not refused) among ``served``, newest first."""
    wanted = set(pairs)
    models = {model for _, model in pairs}
    found: dict[CallerModel, list[int]] = {}
    ordered = sorted(served, key=lambda r: (r.ts, r.request_id), reverse=True)
    for row in ordered:
        if row.blocked_by is not None or row.status >= 400:
            continue
        model = model_of(row)
        if model not in models:
            continue
        for who in ((row.key_id, model), (None, model)):
            if who[0] is not None and who not in wanted:
                continue
            bucket = found.setdefault(who, [])
            if len(bucket) < limit:
                bucket.append(row.output_tokens)
    return found
