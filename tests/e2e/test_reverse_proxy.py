"""Behind a reverse proxy: what the proxy adds about the client's hop (``X-Forwarded-*``,
``X-Real-IP``, ``Forwarded``, a CDN's client address, an identity-aware proxy's user and
access token) is for spendgate and never reaches the provider, while other client headers
still pass through (docs/deploy.md#reverse-proxy-and-tls); nor does the provider's
account (its organization id) reach the client."""

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


# What CDNs and identity-aware proxies (oauth2-proxy, Cloudflare Access, AWS ALB, Google
# IAP, Azure App Service) add: the client's address and country, the signed-in user, and
# tokens that act as that user.
IDENTITY_HEADERS = {
    "CF-Connecting-IP": "203.0.113.7",
    "CF-IPCountry": "FR",
    "Cf-Access-Jwt-Assertion": "eyJ.cloudflare-access.jwt",
    "True-Client-IP": "203.0.113.7",
    "X-Client-IP": "203.0.113.7",
    "Via": "1.1 edge-proxy.internal",
    "X-Forwarded-Access-Token": "ya29.oauth2-proxy-access-token",
    "X-Auth-Request-Access-Token": "ya29.oauth2-proxy-access-token",
    "X-Auth-Request-Email": "dana@example.com",
    "X-Amzn-Oidc-Accesstoken": "alb-access-token",
    "X-Amzn-Oidc-Identity": "dana",
    "X-Goog-Iap-Jwt-Assertion": "eyJ.iap.jwt",
    "X-Goog-Authenticated-User-Email": "accounts.google.com:dana@example.com",
    "X-Ms-Client-Principal-Name": "dana@example.com",
    "X-Ms-Token-Aad-Access-Token": "aad-access-token",
}


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_identity_and_hop_headers_stop_at_the_gateway(gw: GatewayHarness, kind: str) -> None:
    secret = gw.create_key(team="platform", user="behind-sso")
    headers = {
        **IDENTITY_HEADERS,
        "Connection": "keep-alive, X-Hop-Secret",  # names a header about this hop only
        "X-Hop-Secret": "for-the-next-hop-only",
        "X-Team-Trace": "abc",
    }
    messages = [{"role": "user", "content": "hi"}]
    with gw.sdk_client(kind, secret, max_retries=0, timeout=10, default_headers=headers) as sdk:
        if kind == "anthropic":
            raw = sdk.messages.with_raw_response.create(
                model="claude-haiku-4-5", max_tokens=16, messages=messages
            )
        else:
            raw = sdk.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", max_tokens=16, messages=messages
            )
    record = gw.sim.records[-1]
    assert gw.wait_for(lambda: record.finished)
    assert record.status == 200
    for name in [*IDENTITY_HEADERS, "X-Hop-Secret"]:
        assert name.lower() not in record.headers, name
    assert record.headers["x-team-trace"] == "abc"
    # The provider's answer named the operator's account; the client does not see it.
    for name in ("openai-organization", "openai-project", "anthropic-organization-id"):
        assert name not in raw.headers, name
