"""``x-sim-*`` fault injection, error shapes and auth, seen through the real SDKs."""

from __future__ import annotations

import time
from typing import Any

import anthropic
import openai
import pytest

from spendgate.simulator import SimulatorOptions
from spendgate.simulator.thread import SimulatorThread

MESSAGES: list[Any] = [{"role": "user", "content": "Tell me about spend limits."}]
GPT = "gpt-4o-mini"
CLAUDE = "claude-sonnet-4-6"


def chat(client: openai.OpenAI, headers: dict[str, str], **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=GPT, messages=MESSAGES, extra_headers=headers, **kwargs
    )


def message(client: anthropic.Anthropic, headers: dict[str, str], **kwargs: Any) -> Any:
    kwargs.setdefault("max_tokens", 1000)
    return client.messages.create(model=CLAUDE, messages=MESSAGES, extra_headers=headers, **kwargs)


OPENAI_ERRORS = [
    (400, openai.BadRequestError, "invalid_request_error"),
    (401, openai.AuthenticationError, "invalid_request_error"),
    (404, openai.NotFoundError, "invalid_request_error"),
    (429, openai.RateLimitError, "requests"),
    (500, openai.InternalServerError, "server_error"),
    (503, openai.InternalServerError, "server_error"),
    (529, openai.InternalServerError, "server_error"),
]


@pytest.mark.parametrize(("status", "exc", "kind"), OPENAI_ERRORS)
def test_openai_error_shapes(
    sim: SimulatorThread, oai: openai.OpenAI, status: int, exc: type[Exception], kind: str
) -> None:
    with pytest.raises(exc) as info:
        chat(oai, {"x-sim-status": str(status)})
    error = info.value
    assert isinstance(error, openai.APIStatusError)
    assert error.status_code == status
    assert error.type == kind
    body: Any = error.body
    assert set(body) == {"message", "type", "param", "code"}
    assert error.request_id == sim.records[-1].request_id
    assert error.response.headers.get("retry-after") == ("1" if status == 429 else None)
    assert sim.records[-1].status == status
    assert sim.records[-1].outcome == "error"


def test_openai_error_type_override(oai: openai.OpenAI) -> None:
    headers = {"x-sim-status": "429", "x-sim-error-type": "insufficient_quota"}
    with pytest.raises(openai.RateLimitError) as info:
        oai.responses.create(model=GPT, input="hi", extra_headers=headers)
    assert info.value.code == "insufficient_quota"
    assert info.value.type == "insufficient_quota"


ANTHROPIC_ERRORS = [
    (400, anthropic.BadRequestError, "invalid_request_error"),
    (401, anthropic.AuthenticationError, "authentication_error"),
    (402, anthropic.PaymentRequiredError, "billing_error"),
    (413, anthropic.ContentTooLargeError, "request_too_large"),
    (429, anthropic.RateLimitError, "rate_limit_error"),
    (500, anthropic.InternalServerError, "api_error"),
    (529, anthropic.OverloadedError, "overloaded_error"),
]


@pytest.mark.parametrize(("status", "exc", "kind"), ANTHROPIC_ERRORS)
def test_anthropic_error_shapes(
    sim: SimulatorThread,
    claude: anthropic.Anthropic,
    status: int,
    exc: type[Exception],
    kind: str,
) -> None:
    with pytest.raises(exc) as info:
        message(claude, {"x-sim-status": str(status)})
    error = info.value
    assert isinstance(error, anthropic.APIStatusError)
    assert error.status_code == status
    body: Any = error.body
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert error.request_id == sim.records[-1].request_id
    assert error.response.headers.get("retry-after") == ("1" if status == 429 else None)


def test_missing_auth_is_401_in_each_dialect(
    sim: SimulatorThread, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    no_bearer = {"authorization": ""}
    with (
        openai.OpenAI(
            base_url=sim.openai_base_url, api_key="k", max_retries=0, default_headers=no_bearer
        ) as client,
        pytest.raises(openai.AuthenticationError) as oai_info,
    ):
        client.models.list()
    assert oai_info.value.code is None
    assert "Bearer" in oai_info.value.message
    no_credential: Any = {"authorization": anthropic.omit}
    with (
        anthropic.Anthropic(base_url=sim.anthropic_base_url, max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError) as info,
    ):
        message(client, no_credential)
    assert info.value.type == "authentication_error"
    assert "authorization" not in sim.records[-1].headers
    assert "x-api-key" not in sim.records[-1].headers


def test_anthropic_accepts_x_api_key_and_bearer(sim: SimulatorThread) -> None:
    with anthropic.Anthropic(
        base_url=sim.anthropic_base_url, auth_token="tok-1", max_retries=0
    ) as client:
        message(client, {"x-api-key": ""})
    with anthropic.Anthropic(
        base_url=sim.anthropic_base_url,
        api_key="key-2",
        max_retries=0,
        default_headers={"authorization": ""},
    ) as client:
        message(client, {"x-api-key": "key-2"})
    assert [record.status for record in sim.records] == [200, 200]
    assert sim.records[0].headers["authorization"] == "Bearer tok-1"
    assert sim.records[1].headers["x-api-key"] == "key-2"


def test_auth_can_be_disabled() -> None:
    with (
        SimulatorThread(SimulatorOptions(require_auth=False)) as sim,
        openai.OpenAI(
            base_url=sim.openai_base_url,
            api_key="k",
            max_retries=0,
            default_headers={"authorization": ""},
        ) as client,
    ):
        assert client.models.list().data


def test_delay(oai: openai.OpenAI) -> None:
    started = time.perf_counter()
    chat(oai, {"x-sim-delay-ms": "120"})
    assert time.perf_counter() - started >= 0.12


def test_chunk_delay(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    headers = {"x-sim-chunk-delay-ms": "10", "x-sim-output-tokens": "9"}
    started = time.perf_counter()
    chunks = list(chat(oai, headers, stream=True))
    elapsed = time.perf_counter() - started
    assert len(chunks) == 5  # role, 3 deltas of 3 tokens, finish
    assert elapsed >= 0.05  # 5 gaps, [DONE] included


def test_output_tokens_exact_and_capped(oai: openai.OpenAI) -> None:
    exact = chat(oai, {"x-sim-output-tokens": "123"})
    assert exact.usage.completion_tokens == 123
    capped = chat(oai, {"x-sim-output-tokens": "123"}, max_completion_tokens=10)
    assert capped.usage.completion_tokens == 10
    assert capped.choices[0].finish_reason == "length"


def test_ignore_max(claude: anthropic.Anthropic) -> None:
    headers = {"x-sim-output-tokens": "50", "x-sim-ignore-max": "1"}
    result = message(claude, headers, max_tokens=10)
    assert result.usage.output_tokens == 50
    assert len(result.content[0].text.split()) == 50


def test_openai_cache_and_reasoning(oai: openai.OpenAI) -> None:
    headers = {
        "x-sim-cached-tokens": "1000",
        "x-sim-cache-write-tokens": "24",
        "x-sim-reasoning-tokens": "40",
        "x-sim-output-tokens": "100",
    }
    usage = chat(oai, headers).usage
    assert usage.prompt_tokens == 1024  # includes cached and written tokens
    assert usage.prompt_tokens_details.cached_tokens == 1000
    assert usage.prompt_tokens_details.cache_write_tokens == 24
    assert usage.completion_tokens == 100  # includes reasoning
    assert usage.completion_tokens_details.reasoning_tokens == 40
    response = oai.responses.create(model=GPT, input="hi", extra_headers=headers)
    assert response.usage is not None
    assert response.usage.input_tokens == 1024
    assert response.usage.input_tokens_details.cached_tokens == 1000
    assert response.usage.output_tokens_details.reasoning_tokens == 40
    assert len(response.output_text.split()) == 60
    assert response.output[0].type == "reasoning"


def test_anthropic_cache_fields(claude: anthropic.Anthropic) -> None:
    headers = {
        "x-sim-cached-tokens": "1000",
        "x-sim-cache-write-tokens": "20",
        "x-sim-cache-write-1h-tokens": "4",
    }
    usage = message(claude, headers).usage
    assert usage.cache_read_input_tokens == 1000
    assert usage.cache_creation_input_tokens == 24
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_5m_input_tokens == 20
    assert usage.cache_creation.ephemeral_1h_input_tokens == 4
    assert usage.input_tokens == 0  # excludes both cache fields; the prompt is < 1024


def test_no_usage(sim: SimulatorThread, oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    headers = {"x-sim-no-usage": "1"}
    assert chat(oai, headers).usage is None
    chunks = list(chat(oai, headers, stream=True, stream_options={"include_usage": True}))
    assert all(chunk.choices for chunk in chunks)
    events = list(oai.responses.create(model=GPT, input="hi", stream=True, extra_headers=headers))
    assert events[-1].type == "response.completed"
    assert events[-1].response.usage is None
    embedding = oai.embeddings.create(model="e", input="x", extra_headers=headers)
    assert getattr(embedding, "usage", None) is None
    assert getattr(message(claude, headers), "usage", None) is None
    assert sim.wait_idle()
    assert all(record.usage_reported is None for record in sim.records)
    assert all(record.completed for record in sim.records)


def test_die_after_chunks(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    stream = chat(oai, {"x-sim-die-after-chunks": "3"}, stream=True)
    received = []
    with pytest.raises(openai.APIConnectionError):
        received.extend(stream)
    assert len(received) == 3
    with pytest.raises(openai.APIConnectionError):
        chat(oai, {"x-sim-die-after-chunks": "0"})
    first, second = sim.records
    assert (first.outcome, first.completed, first.chunks_sent) == ("died", False, 3)
    assert first.usage_reported is None
    assert (second.outcome, second.chunks_sent) == ("died", 0)


def test_die_after_chunks_anthropic(sim: SimulatorThread, claude: anthropic.Anthropic) -> None:
    with pytest.raises(Exception) as info:  # noqa: PT011 - the SDK lets httpx's error through
        list(message(claude, {"x-sim-die-after-chunks": "4"}, stream=True))
    assert "peer closed connection" in str(info.value)
    record = sim.records[-1]
    assert record.outcome == "died"
    assert record.usage_reported is not None  # message_start went out
    assert record.usage_reported["output_tokens"] == 1


def test_error_after_chunks(
    sim: SimulatorThread, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    headers = {"x-sim-error-after-chunks": "2"}
    with pytest.raises(openai.APIError) as chat_error:
        list(chat(oai, headers, stream=True))
    assert "simulated" in chat_error.value.message
    events = list(oai.responses.create(model=GPT, input="hi", stream=True, extra_headers=headers))
    assert [event.type for event in events] == ["response.created", "response.in_progress", "error"]
    assert events[-1].sequence_number == 2
    with (
        pytest.raises(anthropic.APIStatusError) as claude_error,
        claude.messages.stream(
            model=CLAUDE, max_tokens=100, messages=MESSAGES, extra_headers=headers
        ) as stream,
    ):
        stream.get_final_message()
    assert claude_error.value.status_code == 200
    assert claude_error.value.type == "overloaded_error"
    assert sim.wait_idle()
    assert [record.outcome for record in sim.records] == ["error"] * 3
    assert [record.chunks_sent for record in sim.records] == [3, 3, 3]


def test_client_disconnect_is_noticed(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    headers = {"x-sim-chunk-delay-ms": "20", "x-sim-output-tokens": "300"}
    stream = chat(oai, headers, stream=True)
    iterator = iter(stream)
    next(iterator)
    next(iterator)
    stream.close()
    assert sim.wait_idle(2.0)
    record = sim.records[-1]
    assert record.outcome == "disconnected"
    assert not record.completed
    assert record.chunks_sent < 50  # of ~100 events
    assert record.output_tokens == 300
    assert record.output_tokens_sent < 150


def test_client_gone_during_delay(sim: SimulatorThread) -> None:
    with (
        openai.OpenAI(
            base_url=sim.openai_base_url, api_key="k", max_retries=0, timeout=0.1
        ) as client,
        pytest.raises(openai.APITimeoutError),
    ):
        chat(client, {"x-sim-delay-ms": "2000"})
    assert sim.wait_idle(2.0)
    assert sim.records[-1].outcome == "disconnected"


def test_fail_models_limits_failures_to_the_listed_models(
    sim: SimulatorThread, oai: openai.OpenAI, claude: anthropic.Anthropic
) -> None:
    failing = {"x-sim-fail-models": f"gpt-4o, {CLAUDE}", "x-sim-status": "503"}
    with pytest.raises(openai.InternalServerError):
        oai.chat.completions.create(model="gpt-4o", messages=MESSAGES, extra_headers=failing)
    assert chat(oai, failing).choices[0].message.content  # gpt-4o-mini is not listed
    with pytest.raises(anthropic.InternalServerError):
        message(claude, failing)
    slow = {"x-sim-fail-models": "gpt-4o", "x-sim-delay-ms": "3000"}
    started = time.perf_counter()
    chat(oai, slow)
    assert time.perf_counter() - started < 2.0
    dying = {"x-sim-fail-models": GPT, "x-sim-die-after-chunks": "2"}
    with pytest.raises(openai.APIConnectionError):
        list(chat(oai, dying, stream=True))
    assert (
        len(
            list(
                oai.chat.completions.create(
                    model="gpt-4o", messages=MESSAGES, stream=True, extra_headers=dying
                )
            )
        )
        > 2
    )
    assert sim.wait_idle()
    assert [record.outcome for record in sim.records] == [
        "error",
        "ok",
        "error",
        "ok",
        "died",
        "ok",
    ]
