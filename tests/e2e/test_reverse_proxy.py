"""Behind a reverse proxy: what the proxy adds about the client's hop (``X-Forwarded-*``,
``X-Real-IP``, ``Forwarded``) is for spendgate and never reaches the provider, while other
client headers still pass through (docs/deploy.md#reverse-proxy-and-tls)."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from harness import GatewayHarness

PROXY_HEADERS = {
    "X-Forwarded-For": "10.1.2.3, 172.16.0.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "llm.internal.example",
    "X-Real-IP": "10.1.2.3",
    "Forwarded": "for=10.1.2.3;proto=https",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(tmp_path_factory.mktemp("proxy") / "spendgate.db").start()
    try:
        yield harness
    finally:
        harness.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_forwarding_headers_stop_at_the_gateway(gw: GatewayHarness, stream: bool) -> None:
    secret = gw.create_key(team="platform", user="proxied")
    client = openai.OpenAI(
        api_key=secret,
        base_url=gw.openai_base_url,
        max_retries=0,
        timeout=10,
        default_headers={**PROXY_HEADERS, "X-Team-Trace": "abc"},
    )
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=16,
        stream=stream,
    )
    if stream:
        assert "".join(c.choices[0].delta.content or "" for c in answer if c.choices)
    record = gw.sim.records[-1]
    assert gw.wait_for(lambda: record.finished)
    assert record.status == 200
    for name in PROXY_HEADERS:
        assert name.lower() not in record.headers
    assert record.headers["x-team-trace"] == "abc"
    assert len(gw.ledger(gw.last_key_id)) == 1
