"""Responses API server-side state billed as OpenAI bills it: ``previous_response_id``,
conversations and ``item_reference`` items add their stored tokens to the input."""

from __future__ import annotations

from typing import Any

import openai
import pytest
from simhttp import Raw

from spendgate.simulator import RequestRecord
from spendgate.simulator.thread import SimulatorThread

GPT = "gpt-4o-mini"


def own(client: openai.OpenAI, **body: Any) -> int:
    """The tokens of the body alone (no stored context named)."""
    return client.responses.input_tokens.count(model=GPT, **body).input_tokens


def record_of(sim: SimulatorThread, response_id: str) -> RequestRecord:
    """The record of the request that created ``response_id``."""
    (record,) = [
        r for r in sim.records if r.response_id == response_id and r.path == "/v1/responses"
    ]
    return record


def context_of(response: Any) -> int:
    """What a response contributes as ``previous_response_id``: its input + its output."""
    assert response.usage is not None
    return int(response.usage.input_tokens + response.usage.output_tokens)


def test_previous_response_id_bills_the_stored_context(
    sim: SimulatorThread, oai: openai.OpenAI
) -> None:
    first = oai.responses.create(model=GPT, input="hello there", instructions="be brief")
    second = oai.responses.create(model=GPT, input="and again", previous_response_id=first.id)
    assert second.usage is not None
    assert second.usage.input_tokens == context_of(first) + own(oai, input="and again")
    assert second.previous_response_id == first.id
    record = record_of(sim, second.id)
    assert record.context_input_tokens == context_of(first)
    assert record.input_tokens == second.usage.input_tokens
    assert record.billed["context_input_tokens"] == context_of(first)
    third = oai.responses.create(model=GPT, input="more", previous_response_id=second.id)
    assert third.usage is not None
    assert third.usage.input_tokens == context_of(second) + own(oai, input="more")


def test_previous_response_context_counts_cached_and_reasoning_tokens(
    oai: openai.OpenAI,
) -> None:
    headers = {"x-sim-reasoning-tokens": "30", "x-sim-cached-tokens": "500"}
    first = oai.responses.create(model=GPT, input="think", extra_headers=headers)
    assert first.usage is not None
    assert first.usage.output_tokens_details.reasoning_tokens == 30
    second = oai.responses.create(model=GPT, input="go on", previous_response_id=first.id)
    assert second.usage is not None
    assert second.usage.input_tokens == 500 + first.usage.output_tokens + own(oai, input="go on")


def test_unknown_and_unstored_previous_responses(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        oai.responses.create(model=GPT, input="x", previous_response_id="resp_nope")
    assert info.value.code == "previous_response_not_found"
    assert info.value.param == "previous_response_id"
    assert "Previous response with id 'resp_nope' not found." in info.value.message
    unstored = oai.responses.create(model=GPT, input="secret", store=False)
    with pytest.raises(openai.BadRequestError):
        oai.responses.create(model=GPT, input="x", previous_response_id=unstored.id)
    with pytest.raises(openai.NotFoundError):
        oai.responses.retrieve(unstored.id)


def test_streamed_responses_are_stored_too(oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(model=GPT, input="stream me", stream=True))
    done = events[-1]
    assert done.type == "response.completed"
    again = oai.responses.create(model=GPT, input="next", previous_response_id=done.response.id)
    assert again.usage is not None
    assert again.usage.input_tokens == context_of(done.response) + own(oai, input="next")


def test_retrieve_and_delete(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    created = oai.responses.create(model=GPT, input="keep me")
    fetched = oai.responses.retrieve(created.id)
    assert fetched.id == created.id
    assert fetched.usage == created.usage
    assert fetched.output_text == created.output_text
    record = sim.records[-1]
    assert record.path == f"/v1/responses/{created.id}"
    assert record.input_tokens == 0  # a retrieval bills nothing
    assert record.usage_reported == created.usage.model_dump(exclude_none=True)  # type: ignore[union-attr]
    oai.responses.delete(created.id)
    with pytest.raises(openai.NotFoundError) as info:
        oai.responses.retrieve(created.id)
    assert info.value.param == "response_id"


def test_conversation_accumulates_its_items(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    item = {"type": "message", "role": "user", "content": "Hello!"}
    conversation = oai.conversations.create(items=[item], metadata={"topic": "demo"})
    assert conversation.id.startswith("conv_")
    assert oai.conversations.retrieve(conversation.id).metadata == {"topic": "demo"}
    seeded = 4 + 2  # 4 per item + ceil(len("Hello!") / 4)
    first = oai.responses.create(model=GPT, input="hi", conversation=conversation.id)
    assert first.usage is not None
    assert first.usage.input_tokens == seeded + own(oai, input="hi")
    assert first.conversation is not None
    assert first.conversation.id == conversation.id
    second = oai.responses.create(model=GPT, input="more", conversation={"id": conversation.id})
    assert second.usage is not None
    after_first = seeded + own(oai, input="hi") + first.usage.output_tokens
    assert second.usage.input_tokens == after_first + own(oai, input="more")
    added = oai.conversations.items.create(
        conversation.id, items=[{"type": "message", "role": "user", "content": "x" * 40}]
    )
    assert added.data[0].id.startswith("msg_")
    counted = own(oai, input="last", conversation=conversation.id)
    third = oai.responses.create(model=GPT, input="last", conversation=conversation.id)
    assert third.usage is not None
    after_second = after_first + own(oai, input="more") + second.usage.output_tokens
    assert third.usage.input_tokens == after_second + 14 + own(oai, input="last") == counted
    assert record_of(sim, third.id).context_input_tokens == after_second + 14


def test_unknown_conversation(raw: Raw, oai: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        oai.responses.create(model=GPT, input="x", conversation="conv_nope")
    assert info.value.param == "conversation"
    with pytest.raises(openai.NotFoundError):
        oai.conversations.retrieve("conv_nope")
    answer = raw.post("/v1/conversations", {"items": [{"role": "user"}] * 21})
    assert answer.status == 400
    assert answer.json()["error"]["param"] == "items"
    assert raw.post("/v1/conversations", {"items": "x"}).status == 400
    assert raw.post("/v1/conversations/conv_nope/items", {"items": []}).status == 404


def test_item_reference_bills_the_referenced_item(sim: SimulatorThread, oai: openai.OpenAI) -> None:
    first = oai.responses.create(
        model=GPT,
        input=[{"id": "msg_client_1", "type": "message", "role": "user", "content": "x" * 40}],
    )
    assert first.usage is not None
    message = first.output[-1]
    assert message.type == "message"
    reference: Any = [{"type": "item_reference", "id": message.id}]
    question: Any = [{"role": "user", "content": "and?"}]
    second = oai.responses.create(model=GPT, input=reference + question)
    assert second.usage is not None
    own_tokens = own(oai, input=question) + 4  # the reference item itself: 4, like any item
    assert second.usage.input_tokens == first.usage.output_tokens + own_tokens
    client_item: Any = [{"type": "item_reference", "id": "msg_client_1"}]
    third = oai.responses.create(model=GPT, input=client_item + question)
    assert third.usage is not None
    assert third.usage.input_tokens == 4 + 10 + own_tokens
    assert record_of(sim, third.id).context_input_tokens == 14
    with pytest.raises(openai.NotFoundError) as info:
        oai.responses.create(model=GPT, input=[{"type": "item_reference", "id": "msg_nope"}])
    assert info.value.param == "input"
