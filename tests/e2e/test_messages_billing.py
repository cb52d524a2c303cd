"""End to end, through the real ``anthropic`` SDK: what a Messages request makes Anthropic
bill besides its own model's one pass. Server-side compaction (``context_management``
with a ``compact_*`` edit) is priced as Anthropic bills it; another model serving or
advising the request (``fallbacks``, the advisor tool) is refused.

A compaction is a sampling step of its own, reported only as a ``compaction`` entry of
``usage.iterations``: it reads the whole context (the default trigger is 150,000 input
tokens) and writes a summary, then the answer reads the compacted context. Each step is
billed at the long-context tier of its own input, its summary is output no ``max_tokens``
bounds, and the worst case allows a compaction before each model pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from harness import GatewayHarness
from spendgate.domain.ledger import LedgerRow
from spendgate.money import dollars_to_nanos
from spendgate.simulator.anthropic import COMPACTION_RATIO

# Claude Haiku 5.5: $0.10 / $0.50 per 1M tokens, 5x above 100K input; a 1M window.
MODEL = "claude-haiku-5-5"
COMPACTION = 150_000  # what the compaction read: above the 100K long-context threshold
EDITS = {"edits": [{"type": "compact_20260112"}]}


def configure(data: dict[str, Any]) -> None:
    data["models"][MODEL] = {"provider": "anthropic"}
    data["budgets"] = [
        {"name": "worst", "scope": "user", "match": "u-compact-worst", "limit_usd": "5"}
    ]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("compaction") / "spendgate.db", configure=configure
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def client(gw: GatewayHarness, secret: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=gw.url, api_key=secret, max_retries=0, timeout=10, http_client=httpx2.Client()
    )


def only_row(gw: GatewayHarness, key_id: str) -> LedgerRow:
    rows = gw.ledger(key_id)
    assert len(rows) == 1, rows
    return rows[0]


def per_million(tokens: int, dollars: str) -> int:
    """``tokens`` at ``dollars`` per 1M tokens, in nano-dollars per 1M tokens (exact)."""
    return tokens * dollars_to_nanos(dollars)


@pytest.mark.parametrize("stream", [False, True])
def test_each_step_is_billed_at_the_tier_of_its_own_input(gw: GatewayHarness, stream: bool) -> None:
    """The compaction read 150K tokens (above 100K: $0.50 / $2.50), the answer a short
    compacted context (standard: $0.10 / $0.50). The answer is not billed at the
    long-context rates because the two steps' inputs sum above 100K, and the summary's
    7,500 output tokens above ``max_tokens`` do not make the usage unbelievable."""
    secret = gw.create_key(user="u-compact")
    key_id = gw.last_key_id
    summary = COMPACTION // COMPACTION_RATIO
    with client(gw, secret) as sdk:
        args: dict[str, Any] = {
            "model": MODEL,
            "max_tokens": 1000,
            "messages": [{"role": "user", "content": "Continue the build plan."}],
            "betas": ["compact-2026-01-12"],
            "context_management": EDITS,
            "extra_headers": {"x-sim-compaction-tokens": str(COMPACTION)},
        }
        if stream:
            with sdk.beta.messages.stream(**args) as events:
                message = events.get_final_message()
        else:
            message = sdk.beta.messages.create(**args)
    usage = message.usage
    assert usage.iterations is not None
    compaction, _ = usage.iterations
    assert (compaction.type, compaction.input_tokens) == ("compaction", COMPACTION)
    assert compaction.output_tokens == summary
    row = only_row(gw, key_id)
    assert (row.usage_estimated, row.usage_problem) == (False, None)
    assert row.input_tokens == usage.input_tokens + COMPACTION
    assert row.output_tokens == usage.output_tokens + summary
    exact = (
        per_million(COMPACTION, "0.50")
        + per_million(summary, "2.50")
        + per_million(usage.input_tokens, "0.10")
        + per_million(usage.output_tokens, "0.50")
    )
    assert row.cost_nanos == -(-exact // 1_000_000)


def test_the_worst_case_allows_a_compaction_before_each_pass(gw: GatewayHarness) -> None:
    """A compaction reads the whole context in a pass of its own, before any model pass
    whose input reached its trigger: with a server tool (a search, then a second pass),
    the request is reserved as twice its passes over the model's window, and says so. A
    body whose input stays below the trigger, with nothing to add to it, cannot compact:
    it is counted as any other."""
    secret = gw.create_key(user="u-compact-worst")
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    with client(gw, secret) as sdk:
        searched = sdk.beta.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello"}],
            betas=["compact-2026-01-12"],
            context_management={"edits": [{"type": "compact_20260112"}]},
            tools=[search],
        )
        small = sdk.beta.messages.with_raw_response.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello"}],
            betas=["compact-2026-01-12"],
            context_management={
                "edits": [
                    {
                        "type": "compact_20260112",
                        "trigger": {"type": "input_tokens", "value": 50_000},
                    }
                ]
            },
        )
    bounded = searched.headers["x-spendgate-input-bounded"]
    assert bounded.startswith("context_management.edits[0]: compact_20260112; server tools")
    assert "(4 x the 1000000-token window)" in bounded
    assert "x-spendgate-input-bounded" not in small.headers


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"fallbacks": [{"model": "claude-opus-4-1", "max_tokens": 32_000}]}, "fallbacks"),
        ({"fallbacks": "default"}, "fallbacks"),
        (
            {
                "tools": [
                    {"type": "advisor_20260301", "name": "advisor", "model": "claude-opus-4-1"}
                ]
            },
            "tools[0]",
        ),
    ],
)
def test_another_model_serving_or_advising_is_refused(
    gw: GatewayHarness, extra: dict[str, Any], field: str
) -> None:
    """A server-side fallback is served by another model, with its own ``max_tokens``; the
    advisor tool's calls run the model it names, reported only in ``usage.iterations`` and
    billed at that model's rates. spendgate reserves, charges and authorizes the requested
    model alone: such a request reached Anthropic and its other model's tokens were
    reserved at the requested model's price (a fallback's ``max_tokens`` never clamped) or
    not charged at all (the advisor's), whatever models the key may use. It is refused
    in Anthropic's shape, before anything is reserved or sent."""
    secret = gw.create_key(user="u-other-model", allowed_models=[MODEL])
    sent = len(gw.sim.records)
    with client(gw, secret) as sdk, pytest.raises(anthropic.BadRequestError) as refused:
        sdk.beta.messages.create(
            model=MODEL,
            max_tokens=100,
            messages=[{"role": "user", "content": "Hello"}],
            betas=["server-side-fallback-2026-07-01", "advisor-tool-2026-03-01"],
            extra_body=extra,
        )
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"'{field}' asks for")
    assert len(gw.sim.records) == sent
    assert gw.ledger(gw.last_key_id) == []


def test_a_stream_cut_short_is_charged_the_compaction_it_may_have_run(
    gw: GatewayHarness,
) -> None:
    """A compaction's tokens are reported only in the closing ``message_delta``: a stream
    cut before it (here the provider dies after three events) was charged as if none had
    run. Its worst case allowed one (a server tool may push the context past the trigger),
    so its estimate now charges a pass over the whole context apart, marked estimated; the
    same request without compaction is charged as before."""
    search = {"type": "web_search_20250305", "name": "web_search", "max_uses": 1}
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": "Summarize the build plan so far."}],
        "betas": ["compact-2026-01-12"],
        "tools": [search],
        "stream": True,
        # no x-sim-compaction-tokens: the simulator would report it in message_start too
        "extra_headers": {"x-sim-die-after-chunks": "3", "x-sim-server-tool-uses": "0"},
    }
    rows = []
    for compacting in (False, True):
        secret = gw.create_key(user=f"u-compact-cut-{compacting}")
        args = {**body, "context_management": EDITS} if compacting else body
        with client(gw, secret) as sdk, pytest.raises((anthropic.APIError, httpx2.HTTPError)):
            for _ in sdk.beta.messages.create(**args):
                pass
        rows.append(only_row(gw, gw.last_key_id))
    plain, compacted = rows
    assert plain.usage_estimated
    assert compacted.usage_estimated
    assert plain.input_tokens > 0
    # the answer's pass as plain's, plus a compaction over the whole context as counted
    # offline (the web search tool's definition and system prompt included)
    assert plain.input_tokens < compacted.input_tokens < plain.input_tokens + 1_000
    assert compacted.cost_nanos > plain.cost_nanos
