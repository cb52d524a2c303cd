"""A gateway loads a tokenizer only where a request's admission or metering needs a count
(docs/budgets.md, "The worst case priced before the call"; issue 17's memory target: the
``o200k_base`` tables are 32 MB that bpe-openai never frees once loaded).

A real ``spendgate serve`` process on SQLite with the full policy (three nested budgets
with room, a token rate limit) serves chat and messages requests, streamed and not,
through the real SDKs, and its memory map is read from ``/proc``: the tokenizer's
extension is not mapped. A request whose budget only its exact count fits then makes the
gateway load it, and that request is admitted unclamped."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from e2e.process import GatewayProcess, create_key, write_config
from spendgate.simulator.thread import SimulatorThread

TOKENIZER = "bpe_openai/_bindings"
TIGHT_USD = "0.002"  # fits a 4,000-token prompt's count, not its 28,000-byte bound


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "user", "scope": "user", "match": "*", "limit_usd": "1000", "period": "daily"},
        {"name": "team", "scope": "team", "match": "ml", "limit_usd": "5000"},
        {"name": "org", "scope": "org", "match": "acme", "limit_usd": "90000"},
        {"name": "tight", "scope": "user", "match": "tight", "limit_usd": TIGHT_USD},
    ]
    data["limits"] = [{"name": "tpm", "scope": "team", "tokens": "100000000/minute"}]


def tokenizer_loaded(pid: int) -> bool:
    return TOKENIZER in Path(f"/proc/{pid}/maps").read_text()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayProcess, str]]:
    folder = tmp_path_factory.mktemp("tokenizer")
    with SimulatorThread() as sim:
        config = write_config(folder, sim.url, configure=configure)
        with GatewayProcess(config) as gateway:
            yield gateway, str(config)


def test_requests_with_room_load_no_tokenizer_and_a_tight_budget_does(
    served: tuple[GatewayProcess, str],
) -> None:
    gateway, config = served
    key = create_key(Path(config), "--name", "roomy", "--user", "ann", "--team", "ml")["key"]
    assert not tokenizer_loaded(gateway.pid)  # (nothing at start)
    prompt = [{"role": "user", "content": "Write a haiku about budgets. " * 20}]
    with openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0) as client:
        for _ in range(3):
            answer = client.chat.completions.create(
                model="gpt-4o-mini", messages=prompt, max_tokens=200
            )
            assert answer.usage is not None
            assert answer.usage.completion_tokens > 0
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=prompt,
            max_tokens=1000,  # above the answer's bytes: its output guard need not count
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert chunks[-1].usage is not None
        assert chunks[-1].usage.completion_tokens > 0
    with anthropic.Anthropic(api_key=key, base_url=gateway.url, max_retries=0) as claude:
        with claude.messages.stream(
            model="claude-haiku-4-5", max_tokens=1000, messages=prompt
        ) as events:
            assert events.get_final_message().usage.output_tokens > 0
        message = claude.messages.create(model="claude-haiku-4-5", max_tokens=300, messages=prompt)
        assert message.usage.output_tokens > 0
    assert not tokenizer_loaded(gateway.pid)

    # A prompt of ~4,000 tokens in 28,000 bytes: its bound does not fit the tight budget,
    # its count does. Admitted as the count says (not clamped), after a count.
    tight = create_key(Path(config), "--name", "tight", "--user", "tight", "--team", "ml")["key"]
    words = " ".join(["budget"] * 4000)
    with openai.OpenAI(api_key=tight, base_url=gateway.url + "/v1", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": words}], max_tokens=16
        )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-spendgate-budget"] == "tight"
    assert "x-spendgate-output-clamped" not in raw.headers
    assert tokenizer_loaded(gateway.pid)


def test_bodies_below_count_below_bytes_are_counted_first(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """`budget_settings.count_below_bytes`: an operator who wants small bodies to hold
    their exact count gets them counted, room or not."""

    def counted_first(data: dict[str, Any]) -> None:
        configure(data)
        data["budget_settings"] = {"count_below_bytes": 16384}

    folder = tmp_path_factory.mktemp("count-first")
    with SimulatorThread() as sim:
        config = write_config(folder, sim.url, configure=counted_first)
        key = create_key(config, "--name", "small", "--user", "bo", "--team", "ml")["key"]
        with GatewayProcess(config) as gateway:
            assert not tokenizer_loaded(gateway.pid)
            with openai.OpenAI(api_key=key, base_url=gateway.url + "/v1", max_retries=0) as c:
                answer = c.chat.completions.create(
                    model="gpt-4o-mini",
                    messages=[{"role": "user", "content": "Say hello."}],
                    max_tokens=20,
                )
            assert answer.usage is not None
            assert tokenizer_loaded(gateway.pid)
