"""The storage outage policy: fail closed. With its storage failing, the gateway refuses
requests before any provider call, with a 503 in each caller's dialect, and ``/readyz``
says it is not ready (so a load balancer stops sending it traffic)."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness

PROMPT = [{"role": "user", "content": "hello"}]
ADMIN = "outage-admin-token"


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[GatewayHarness, str]]:
    """A gateway whose storage is closed under it after one healthy request."""
    harness = GatewayHarness(
        tmp_path_factory.mktemp("outage") / "spendgate.db",
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    try:
        secret = harness.create_key(name="outage", team="ml")
        with harness.sdk_client("openai", secret, max_retries=0) as client:
            client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
        assert httpx2.get(harness.url + "/readyz").status_code == 200
        harness.call(harness.gateway.storage.close())  # as if the disk went away
        yield harness, secret
    finally:
        harness.stop()


def test_readyz_turns_unready(broken: tuple[GatewayHarness, str]) -> None:
    harness, _ = broken
    response = httpx2.get(harness.url + "/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "storage unavailable"
    assert body["stores"]["storage"] == "unavailable"  # each store by name
    assert httpx2.get(harness.url + "/healthz").status_code == 200  # alive, not ready


def test_openai_callers_get_a_503_and_nothing_reaches_the_provider(
    broken: tuple[GatewayHarness, str],
) -> None:
    harness, secret = broken
    before = len(harness.sim.records)
    with (
        harness.sdk_client("openai", secret, max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
    error = caught.value
    assert error.status_code == 503
    assert isinstance(error.body, dict)
    assert error.body["code"] == "storage_unavailable"
    assert error.body["type"] == "api_error"
    assert "unmetered" in error.body["message"]
    assert error.response.headers["retry-after"] == "5"
    assert error.response.headers["x-should-retry"] == "true"
    assert len(harness.sim.records) == before


def test_anthropic_callers_get_a_503_in_their_shape(broken: tuple[GatewayHarness, str]) -> None:
    harness, secret = broken
    before = len(harness.sim.records)
    with (
        harness.sdk_client("anthropic", secret, max_retries=0) as client,
        pytest.raises(anthropic.APIStatusError) as caught,
    ):
        client.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=PROMPT)
    error = caught.value
    assert error.status_code == 503
    assert isinstance(error.body, dict)
    assert error.body["type"] == "error"
    assert error.body["error"]["type"] == "overloaded_error"
    assert len(harness.sim.records) == before


def test_admin_reads_get_the_same_503(broken: tuple[GatewayHarness, str]) -> None:
    harness, _ = broken
    response = httpx2.get(harness.url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "storage_unavailable"


def test_metrics_still_answer_what_this_process_counted(
    broken: tuple[GatewayHarness, str],
) -> None:
    """A scrape during the outage was a 503 too (it read the budget and loop gauges from
    storage first): Prometheus lost every series, the outage's refusals among them, exactly
    when they were wanted. Now it answers the counters and this process's gauges."""
    harness, secret = broken
    with (
        harness.sdk_client("openai", secret, max_retries=0) as client,
        pytest.raises(openai.APIStatusError),
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT, max_tokens=5)
    response = httpx2.get(harness.url + "/metrics", headers={"authorization": f"Bearer {ADMIN}"})
    assert response.status_code == 200, response.text
    requests = [
        line for line in response.text.splitlines() if line.startswith("spendgate_requests_total{")
    ]
    assert any('status="200"' in line for line in requests)  # served before the outage
    assert any('status="503"' in line for line in requests)  # refused during it
    assert "spendgate_requests_in_flight " in response.text  # this process's own gauges
    assert "spendgate_budget_" not in response.text  # read from storage: left out
