"""Every answer says ``Server: spendgate`` (no aiohttp version) and carries
``x-content-type-options: nosniff``: relayed provider answers, streamed ones (which still
stream through the real SDKs) and JSON errors share the dashboard's origin."""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import pytest

from harness import GatewayHarness


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path_factory.mktemp("headers") / "spendgate.db").start()
    yield harness
    harness.stop()


def _plain(headers: object) -> None:
    get = headers.get  # type: ignore[attr-defined]
    assert get("server") == "spendgate"
    assert get("x-content-type-options") == "nosniff"


def test_streamed_openai_answers_carry_the_headers_and_still_stream(gw: GatewayHarness) -> None:
    secret = gw.create_key()
    with gw.sdk_client("openai", secret) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=20,
            stream=True,
        )
        _plain(raw.headers)
        chunks = list(raw.parse())
        assert len(chunks) > 1


def test_anthropic_answers_carry_the_headers(gw: GatewayHarness) -> None:
    secret = gw.create_key()
    with gw.sdk_client("anthropic", secret) as client:
        raw = client.messages.with_raw_response.create(
            model="claude-haiku-4-5",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=20,
        )
        _plain(raw.headers)
        assert raw.parse().content


async def test_errors_and_pages_carry_the_headers(gw: GatewayHarness) -> None:
    async with aiohttp.ClientSession() as session:
        for path in ("/v1/models", "/admin/keys", "/nowhere", "/healthz"):
            async with session.get(gw.url + path) as answer:
                _plain(answer.headers)
