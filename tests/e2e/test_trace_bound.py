"""The trace of a request no budget applies to (`spendgate.pipeline.trace`) holds a worst
case that covers the request's input, images and documents included: it is what a crash
between the provider call and the row charges.

A part that is not text can cost far more tokens than its bytes (a few hundred bytes of
image are up to 48,169 tokens on gpt-4o-mini), so the body is also bounded by the
byte-bound walk that admission uses, and the larger bound is held. Real gateway, the
simulator upstream, the OpenAI and Anthropic SDKs; the trace's plan is read as storage
receives it."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest

from harness import GatewayHarness
from spendgate.domain.admission import WorstCase
from spendgate.storage import ReservationPlan

# A 1x1 PNG: 68 bytes, 92 in base64.
PIXEL = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201e2f0d5"
        "b30000000049454e44ae426082"
    )
).decode()
# gpt-4o-mini's most for one image at any detail but low: 2,833 + 8 tiles x 5,667
GPT_4O_MINI_IMAGE_MOST = 2_833 + 8 * 5_667
ANTHROPIC_IMAGE_MOST = 1_600


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["budgets"] = []  # every request is traced, none reserved on a budget

    harness = GatewayHarness(
        tmp_path_factory.mktemp("trace") / "spendgate.db", configure=configure
    ).start()
    yield harness
    harness.stop()


def traced(gw: GatewayHarness, client: Any, send: Any) -> list[WorstCase]:
    """The worst cases of the traces written while ``send(client)`` runs (the SDK
    ``client`` closed after)."""
    storage = gw.gateway.storage
    original = storage.reserve
    plans: list[ReservationPlan] = []

    async def recording(plan: ReservationPlan) -> Any:
        plans.append(plan)
        return await original(plan)

    storage.reserve = recording  # type: ignore[method-assign]
    try:
        with client:
            send(client)
    finally:
        del storage.reserve  # type: ignore[method-assign]
    assert [plan.counters for plan in plans] == [()] * len(plans)  # traces, no budget
    return [plan.worst for plan in plans]


def test_an_image_is_bounded_by_its_most_not_by_its_bytes(gw: GatewayHarness) -> None:
    client = gw.sdk_client("openai", gw.create_key(name="pictures"), max_retries=0)
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PIXEL}"}}
    [worst] = traced(
        gw,
        client,
        lambda client: client.chat.completions.create(
            model="gpt-4o-mini",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}],
        ),
    )
    assert worst.input_tokens >= GPT_4O_MINI_IMAGE_MOST


def test_a_claude_image_is_bounded_by_its_most(gw: GatewayHarness) -> None:
    client = gw.sdk_client("anthropic", gw.create_key(name="claude-pictures"), max_retries=0)
    image = {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PIXEL},
    }
    [worst] = traced(
        gw,
        client,
        lambda client: client.messages.create(
            model="claude-haiku-4-5",
            max_tokens=5,
            messages=[{"role": "user", "content": [image, {"type": "text", "text": "What?"}]}],
        ),
    )
    assert worst.input_tokens >= ANTHROPIC_IMAGE_MOST


def test_a_text_body_is_bounded_by_its_bytes(gw: GatewayHarness) -> None:
    client = gw.sdk_client("openai", gw.create_key(name="words"), max_retries=0)
    [worst] = traced(
        gw,
        client,
        lambda client: client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "Hello."}]
        ),
    )
    assert 10 < worst.input_tokens < 500  # the body's bytes: no image's most in it
