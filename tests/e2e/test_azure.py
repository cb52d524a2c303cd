"""Azure OpenAI end to end: the gateway sends the key as ``api-key`` (never as a bearer token,
never the caller's gateway key), to the v1 API (``/openai/v1/...``) or to a deployment URL
(``/openai/deployments/{deployment}/chat/completions?api-version=...``), and meters the
answer like any other OpenAI request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from harness import GatewayHarness
from spendgate.simulator import RequestRecord

AZURE_SECRET = "azure-provider-secret-0123456789"
API_VERSION = "2024-10-21"


def _azure(data: dict[str, Any]) -> None:
    sim = data["providers"]["openai"]["base_url"].removesuffix("/v1")
    data["providers"]["azure-v1"] = {
        "kind": "openai",
        "base_url": f"{sim}/openai/v1",
        "api_key_env": "AZURE_OPENAI_API_KEY",
        "auth": "api-key",
    }
    data["providers"]["azure-deployments"] = {
        "kind": "openai",
        "base_url": f"{sim}/openai",
        "api_key_env": "AZURE_OPENAI_API_KEY",
        "auth": "api-key",
        "api_version": API_VERSION,
    }
    models = data["models"]
    models["az-mini"] = {"provider": "azure-v1", "upstream_model": "gpt-4o-mini"}
    models["az-dep-mini"] = {"provider": "azure-deployments", "upstream_model": "gpt-4o-mini"}
    models["az-dep-embed"] = {
        "provider": "azure-deployments",
        "upstream_model": "text-embedding-3-small",
    }


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("azure") / "spendgate.db",
        configure=_azure,
        env={"AZURE_OPENAI_API_KEY": AZURE_SECRET},
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def _client(gw: GatewayHarness) -> tuple[openai.OpenAI, str]:
    secret = gw.create_key(team="platform", user="azure-user")
    client = openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=10)
    return client, secret


def _last_record(gw: GatewayHarness) -> RequestRecord:
    record = gw.sim.records[-1]
    assert gw.wait_for(lambda: record.finished)
    return record


def _assert_azure_auth(record: RequestRecord, gateway_secret: str) -> None:
    assert record.headers["api-key"] == AZURE_SECRET
    assert "authorization" not in record.headers
    assert all(gateway_secret not in value for value in record.headers.values())


def test_v1_api_gets_api_key_and_the_v1_path(gw: GatewayHarness) -> None:
    client, secret = _client(gw)
    answer = client.chat.completions.create(
        model="az-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=20
    )
    assert answer.choices[0].message.content
    record = _last_record(gw)
    assert record.path == "/openai/v1/chat/completions"
    assert record.query == ""
    assert record.body["model"] == "gpt-4o-mini"
    _assert_azure_auth(record, secret)
    rows = gw.ledger(gw.last_key_id)
    assert len(rows) == 1
    assert rows[0].provider == "azure-v1"
    assert rows[0].cost_nanos > 0


def test_deployment_url_with_api_version_streaming(gw: GatewayHarness) -> None:
    client, secret = _client(gw)
    stream = client.chat.completions.create(
        model="az-dep-mini",
        messages=[{"role": "user", "content": "count to three"}],
        max_tokens=30,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text
    record = _last_record(gw)
    assert record.path == "/openai/deployments/gpt-4o-mini/chat/completions"
    assert record.query == f"api-version={API_VERSION}"
    _assert_azure_auth(record, secret)
    rows = gw.ledger(gw.last_key_id)
    assert len(rows) == 1
    assert rows[0].provider == "azure-deployments"
    assert rows[0].output_tokens > 0


def test_deployment_url_replaces_a_client_api_version(gw: GatewayHarness) -> None:
    client, secret = _client(gw)
    client.embeddings.create(
        model="az-dep-embed",
        input="tea",
        extra_query={"api-version": "1999-01-01", "keep": "me"},
    )
    record = _last_record(gw)
    assert record.path == "/openai/deployments/text-embedding-3-small/embeddings"
    assert record.query == f"api-version={API_VERSION}&keep=me"
    _assert_azure_auth(record, secret)
