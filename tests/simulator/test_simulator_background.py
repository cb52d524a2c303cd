"""Background responses: queued at once, completed later, cancellable, retrievable."""

from __future__ import annotations

import time
from typing import Any

import openai
import pytest
from simhttp import Raw

from spendgate.simulator import RequestRecord
from spendgate.simulator.app import STATE_KEY
from spendgate.simulator.thread import SimulatorThread

GPT = "gpt-4o-mini"
SLOW = {"x-sim-background-ms": "0", "x-sim-chunk-delay-ms": "20", "x-sim-output-tokens": "300"}


def creator(sim: SimulatorThread, response_id: str) -> RequestRecord:
    (record,) = [
        r for r in sim.records if r.response_id == response_id and r.path == "/v1/responses"
    ]
    return record


def wait_for(client: openai.OpenAI, response_id: str, statuses: set[str]) -> Any:
    deadline = time.monotonic() + 10
    while True:
        response = client.responses.retrieve(response_id)
        if response.status in statuses or time.monotonic() > deadline:
            return response
        time.sleep(0.01)


def test_background_completes_later(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    queued = oai.responses.create(model=GPT, input="hello", background=True)
    assert queued.status == "queued"
    assert queued.background is True
    assert queued.usage is None
    assert queued.output == []
    record = creator(sim, queued.id)
    assert record.completed
    assert record.usage_reported is None
    done = wait_for(oai, queued.id, {"completed"})
    assert done.status == "completed"
    assert done.usage is not None
    assert done.usage.output_tokens == len(done.output_text.split())
    assert record.response_status == "completed"
    assert record.billed["output_tokens"] == done.usage.output_tokens
    assert record.billed["input_tokens"] == done.usage.input_tokens
    follow_up = oai.responses.create(model=GPT, input="next", previous_response_id=done.id)
    assert follow_up.usage is not None
    context = done.usage.input_tokens + done.usage.output_tokens
    assert follow_up.usage.input_tokens > context


def test_cancel_bills_what_was_generated(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    queued = oai.responses.create(model=GPT, input="long", background=True, extra_headers=SLOW)
    stored = sim.simulator.app[STATE_KEY].store.response(queued.id)
    assert stored is not None
    assert stored.job is not None
    job = stored.job
    assert sim.wait_until(lambda _: job.generated >= 6)
    cancelled = oai.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert cancelled.usage is not None
    generated = cancelled.usage.output_tokens
    assert 0 < generated < 300
    assert len(cancelled.output_text.split()) == generated
    record = creator(sim, queued.id)
    assert record.response_status == "cancelled"
    assert record.output_tokens == generated
    assert record.billed["input_tokens"] == cancelled.usage.input_tokens > 0
    time.sleep(0.1)
    again = oai.responses.cancel(queued.id)  # idempotent: the same final object
    assert again.status == "cancelled"
    assert again.usage == cancelled.usage
    assert oai.responses.retrieve(queued.id).usage == cancelled.usage


def test_cancel_while_queued_bills_nothing(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    headers = {"x-sim-background-ms": "5000"}
    queued = oai.responses.create(model=GPT, input="wait", background=True, extra_headers=headers)
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=GPT, input="x", previous_response_id=queued.id)
    cancelled = oai.responses.cancel(queued.id)
    assert cancelled.status == "cancelled"
    assert cancelled.usage is None
    assert cancelled.output == []
    record = creator(sim, queued.id)
    assert (record.input_tokens, record.output_tokens) == (0, 0)


def test_cancel_refusals(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        oai.responses.cancel("resp_nope")
    plain = oai.responses.create(model=GPT, input="not in the background")
    with pytest.raises(openai.BadRequestError):
        oai.responses.cancel(plain.id)
    finished = oai.responses.create(model=GPT, input="quick", background=True)
    done = wait_for(oai, finished.id, {"completed"})
    assert oai.responses.cancel(finished.id).usage == done.usage


def test_background_stream_and_resume(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=GPT, input="hello", background=True, stream=True))
    kinds = [event.type for event in events]
    assert kinds[:3] == ["response.created", "response.queued", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert events[0].response.status == "queued"  # type: ignore[union-attr]
    assert [event.sequence_number for event in events] == list(range(len(events)))
    response_id = events[0].response.id  # type: ignore[union-attr]
    record = creator(sim, response_id)
    assert record.stream
    assert record.usage_reported is not None
    resumed = list(oai.responses.retrieve(response_id, stream=True, starting_after=2))
    assert [event.sequence_number for event in resumed] == list(range(3, len(events)))
    assert resumed[-1].type == "response.completed"


def test_background_stream_survives_the_client(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    headers = {**SLOW, "x-sim-output-tokens": "30"}
    stream = oai.responses.create(
        model=GPT, input="x", background=True, stream=True, extra_headers=headers
    )
    first = next(iter(stream))
    stream.close()
    response_id = first.response.id  # type: ignore[union-attr]
    done = wait_for(oai, response_id, {"completed"})
    assert done.status == "completed"
    assert done.usage is not None
    assert done.usage.output_tokens == 30


def test_retrieve_stream_refusals(raw: Raw, oai: openai.OpenAI) -> None:
    plain = oai.responses.create(model=GPT, input="x")
    answer = raw.send("GET", f"/v1/responses/{plain.id}?stream=true")
    assert answer.status == 400
    assert answer.json()["error"]["param"] == "stream"
    assert raw.send("GET", "/v1/responses/resp_nope").status == 404
    assert raw.send("DELETE", "/v1/responses/resp_nope").status == 404
