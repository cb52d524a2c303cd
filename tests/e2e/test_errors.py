"""Every refusal and every upstream failure, seen through the real ``openai`` and
``anthropic`` SDKs over real HTTP (shared/CLIENTS.md §5, §6.4, §9).

Each test counts the HTTP requests its SDK sent with an event hook on its ``httpx2`` client
(the HTTP library these SDK versions are built on), with the SDK's
default ``max_retries`` (2) wherever retries are the point, so "no retry" is proven.
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from harness import GatewayHarness
from spendgate.simulator import Simulator
from spendgate.simulator import records as sim_records
from spendgate.simulator import wire as sim_wire

PROMPT = [{"role": "user", "content": "Say hello to the gateway tests."}]


# --------------------------------------------------------------------------- helpers


class Counter:
    """An httpx event hook that counts the requests a client sent."""

    def __init__(self) -> None:
        self.count = 0
        self.last: httpx2.Request | None = None

    def __call__(self, request: httpx2.Request) -> None:
        self.count += 1
        self.last = request

    async def on_request(self, request: httpx2.Request) -> None:
        self(request)


@dataclass
class Clients:
    """Sync SDK clients bound to one gateway, each with its own request counter."""

    base_url: str
    made: list[Any]

    def openai(self, secret: str, **options: Any) -> tuple[openai.OpenAI, Counter]:
        counter = Counter()
        http = httpx2.Client(event_hooks={"request": [counter]})
        client = openai.OpenAI(
            api_key=secret, base_url=self.base_url + "/v1", http_client=http, **options
        )
        self.made.append(client)
        return client, counter

    def anthropic(self, secret: str, **options: Any) -> tuple[anthropic.Anthropic, Counter]:
        counter = Counter()
        http = httpx2.Client(event_hooks={"request": [counter]})
        client = anthropic.Anthropic(
            api_key=secret, base_url=self.base_url, http_client=http, **options
        )
        self.made.append(client)
        return client, counter


@contextmanager
def clients_for(harness: GatewayHarness) -> Iterator[Clients]:
    clients = Clients(harness.url, [])
    try:
        yield clients
    finally:
        for client in clients.made:
            client.close()


@pytest.fixture
def clients(gw: GatewayHarness) -> Iterator[Clients]:
    with clients_for(gw) as made:
        yield made


@pytest.fixture
def special_clients(special: GatewayHarness) -> Iterator[Clients]:
    with clients_for(special) as made:
        yield made


def tagged() -> tuple[str, dict[str, str]]:
    """A unique id and the header that carries it to the simulator."""
    tag = uuid.uuid4().hex
    return tag, {"x-test-id": tag}


def sim_records_for(harness: GatewayHarness, tag: str) -> list[sim_records.RequestRecord]:
    return [r for r in list(harness.sim.records) if r.headers.get("x-test-id") == tag]


def openai_chat(client: openai.OpenAI, model: str, headers: dict[str, Any]) -> Any:
    return client.chat.completions.create(
        model=model, messages=PROMPT, max_tokens=16, extra_headers=headers
    )


def anthropic_message(client: anthropic.Anthropic, model: str, headers: dict[str, Any]) -> Any:
    return client.messages.create(
        model=model, messages=PROMPT, max_tokens=16, extra_headers=headers
    )


def assert_openai_envelope(error: openai.APIStatusError, code: str | None) -> dict[str, Any]:
    body = error.response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code
    assert error.code == code
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


def assert_anthropic_envelope(error: anthropic.APIStatusError, kind: str) -> dict[str, Any]:
    body = error.response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    return body["error"]


def refused_locally(harness: GatewayHarness, tag: str, rows_before: int) -> None:
    """The gateway answered itself: nothing went upstream and nothing was metered."""
    assert sim_records_for(harness, tag) == []
    assert len(harness.ledger()) == rows_before


# --------------------------------------------------------------------------- 1. bad keys

BAD_KEYS = ["unknown", "missing", "revoked", "expired"]


def bad_secret(gw: GatewayHarness, kind: str) -> str:
    if kind == "unknown":
        return "sk-sg-" + "0" * 40
    if kind == "missing":
        return "never-sent"
    if kind == "revoked":
        secret = gw.create_key(name="to-revoke")
        gw.call(gw.gateway.keys.revoke(gw.last_key_id))
        return secret
    # A key cannot be created already expired: this one's expiry passed while it was stored.
    secret = gw.create_key(name="expired", expires_at=datetime.now(UTC) + timedelta(days=1))
    key = gw.call(gw.gateway.keys.get(gw.last_key_id))
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=5)
    gw.call(gw.gateway.storage.update_key(dataclasses.replace(key, expires_at=past)))
    return secret


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_bad_key_openai(gw: GatewayHarness, clients: Clients, kind: str) -> None:
    client, counter = clients.openai(bad_secret(gw, kind))
    tag, headers = tagged()
    before = len(gw.ledger())
    # "missing": the SDK insists on a key, so it gets one and omits the header it makes
    extra: dict[str, Any] = {"Authorization": openai.omit} if kind == "missing" else {}
    with pytest.raises(openai.AuthenticationError) as info:
        openai_chat(client, "gpt-4o-mini", headers | extra)
    error = info.value
    assert error.status_code == 401
    inner = assert_openai_envelope(error, "invalid_api_key")
    assert inner["type"] == "invalid_request_error"
    assert error.response.headers["x-should-retry"] == "false"
    assert counter.count == 1
    assert counter.last is not None
    if kind == "missing":
        assert "authorization" not in counter.last.headers
    refused_locally(gw, tag, before)


@pytest.mark.parametrize("kind", BAD_KEYS)
def test_bad_key_anthropic(gw: GatewayHarness, clients: Clients, kind: str) -> None:
    client, counter = clients.anthropic(bad_secret(gw, kind))
    tag, headers = tagged()
    before = len(gw.ledger())
    extra: dict[str, Any] = {"Authorization": anthropic.omit} if kind == "missing" else {}
    with pytest.raises(anthropic.AuthenticationError) as info:
        anthropic_message(client, "claude-haiku-4-5", headers | extra)
    error = info.value
    assert error.status_code == 401
    assert_anthropic_envelope(error, "authentication_error")
    assert error.response.headers["x-should-retry"] == "false"
    assert counter.count == 1
    assert counter.last is not None
    if kind == "missing":
        assert "authorization" not in counter.last.headers
        assert "x-api-key" not in counter.last.headers
    refused_locally(gw, tag, before)


def test_bad_key_message_says_why(gw: GatewayHarness, clients: Clients) -> None:
    cases = (("missing", "Missing API key"), ("revoked", "revoked"), ("expired", "expired"))
    for kind, words in cases:
        client, _ = clients.openai(bad_secret(gw, kind))
        extra: dict[str, Any] = {"Authorization": openai.omit} if kind == "missing" else {}
        with pytest.raises(openai.AuthenticationError) as info:
            openai_chat(client, "gpt-4o-mini", extra)
        assert words in info.value.response.json()["error"]["message"]


@pytest.mark.parametrize("spendgate_in", ["x-api-key", "authorization"])
def test_two_credentials_the_spendgate_key_is_used(gw: GatewayHarness, spendgate_in: str) -> None:
    """A client may send both `x-api-key` and `Authorization: Bearer` (an agent with both
    of its credential variables set); one may be a provider's key left in the
    environment. The spendgate key is the caller's credential wherever it is, and neither
    secret goes upstream."""
    secret = gw.create_key(name="two-credentials")
    provider_key = "sk-ant-api03-" + "x" * 40
    api_key, bearer = (
        (secret, provider_key) if spendgate_in == "x-api-key" else (provider_key, secret)
    )
    before = len(gw.sim.records)
    reply = httpx2.post(
        gw.url + "/v1/messages",
        json={
            "model": "claude-haiku-4-5",
            "max_tokens": 5,
            "messages": [{"role": "user", "content": "hi"}],
        },
        headers={"x-api-key": api_key, "authorization": f"Bearer {bearer}"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    [record] = gw.sim.records[before:]
    sent = " ".join(record.headers.values())
    assert secret not in sent
    assert provider_key not in sent
    [row] = gw.ledger(gw.last_key_id)
    assert row.status == 200


# --------------------------------------------------------------------------- 2. bad bodies

BAD_BODIES = {
    "malformed": b'{"model": "gpt-4o-mini", "messages": [',
    "not-an-object": b'["gpt-4o-mini"]',
    "empty": b"",
    "no-model": b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}',
}


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
@pytest.mark.parametrize("problem", sorted(BAD_BODIES))
def test_bad_body_is_400_in_dialect(gw: GatewayHarness, path: str, problem: str) -> None:
    secret = gw.create_key(name="bad-body")
    key_id = gw.last_key_id
    tag, headers = tagged()
    headers |= {"authorization": f"Bearer {secret}", "content-type": "application/json"}
    if path == "/v1/messages":
        headers["anthropic-version"] = "2023-06-01"
    with httpx2.Client(base_url=gw.url) as http:
        response = http.post(path, content=BAD_BODIES[problem], headers=headers)
    assert response.status_code == 400
    assert response.headers["x-should-retry"] == "false"
    body = response.json()
    if path == "/v1/messages":
        assert body["type"] == "error"
        assert body["error"]["type"] == "invalid_request_error"
    else:
        assert set(body["error"]) == {"message", "type", "param", "code"}
        assert body["error"]["type"] == "invalid_request_error"
        if problem == "no-model":
            assert body["error"]["param"] == "model"
    assert gw.ledger(key_id) == []
    assert sim_records_for(gw, tag) == []


# --------------------------------------------------------------------------- 3. unknown model


def test_unknown_model_openai(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.openai(gw.create_key(name="unknown-model"))
    tag, headers = tagged()
    before = len(gw.ledger())
    with pytest.raises(openai.NotFoundError) as info:
        openai_chat(client, "gpt-9-ultra", headers)
    assert info.value.status_code == 404
    inner = assert_openai_envelope(info.value, "model_not_found")
    assert inner["param"] == "model"
    assert "gpt-9-ultra" in inner["message"]
    assert counter.count == 1
    refused_locally(gw, tag, before)


def test_unknown_model_anthropic(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.anthropic(gw.create_key(name="unknown-model"))
    tag, headers = tagged()
    before = len(gw.ledger())
    with pytest.raises(anthropic.NotFoundError) as info:
        anthropic_message(client, "claude-imaginary-9", headers)
    assert info.value.status_code == 404
    inner = assert_anthropic_envelope(info.value, "not_found_error")
    assert "claude-imaginary-9" in inner["message"]
    assert counter.count == 1
    refused_locally(gw, tag, before)


BASE_URL_HINT = (
    "Check the client's base URL: an OpenAI client's ends in /v1, an Anthropic client's "
    "(and Claude Code's) is the gateway's address without /v1."
)


def test_an_openai_sdk_without_v1_is_told_its_base_url(gw: GatewayHarness) -> None:
    """The first-hour mistake: ``OpenAI(base_url="http://host:8700")`` posts to
    ``/chat/completions``. The 404 says which path was meant and why."""
    with (
        httpx2.Client() as http,
        openai.OpenAI(
            api_key=gw.create_key(name="no-v1"), base_url=gw.url, http_client=http, max_retries=0
        ) as client,
        pytest.raises(openai.NotFoundError) as info,
    ):
        client.chat.completions.create(model="gpt-4o-mini", messages=PROMPT)
    message = info.value.body["message"]  # type: ignore[index]
    assert message == (
        "No route for POST /chat/completions on this gateway. Did you mean "
        f"/v1/chat/completions? {BASE_URL_HINT}"
    )


def test_an_anthropic_sdk_with_v1_is_told_its_base_url(gw: GatewayHarness) -> None:
    """The other one: ``Anthropic(base_url="http://host:8700/v1")`` posts to
    ``/v1/v1/messages``."""
    with (
        httpx2.Client() as http,
        anthropic.Anthropic(
            api_key=gw.create_key(name="v1-twice"),
            base_url=gw.url + "/v1",
            http_client=http,
            max_retries=0,
        ) as client,
        pytest.raises(anthropic.NotFoundError) as info,
    ):
        client.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=PROMPT)
    assert info.value.message.startswith(
        f"404 No route for POST /v1/v1/messages on this gateway. Did you mean /v1/messages? "
        f"{BASE_URL_HINT}"
    )


@pytest.mark.parametrize("path", ["/nothing", "/v1/nothing", "/v1/v1/nothing", "/admin/nope"])
def test_a_path_that_is_no_route_either_way_gets_no_hint(gw: GatewayHarness, path: str) -> None:
    answer = httpx2.post(gw.url + path, json={}, timeout=10)
    assert answer.status_code == 404
    assert answer.json()["error"]["message"] == f"No route for POST {path} on this gateway."


# --------------------------------------------------------------------------- 4. permissions


def test_unpriced_model_is_refused_not_free(
    special: GatewayHarness, special_clients: Clients
) -> None:
    client, counter = special_clients.openai(special.create_key(name="unpriced"))
    tag, headers = tagged()
    before = len(special.ledger())
    with pytest.raises(openai.PermissionDeniedError) as info:
        openai_chat(client, "unpriced-model", headers)
    assert info.value.status_code == 403
    inner = assert_openai_envelope(info.value, "model_not_priced")
    assert inner["param"] == "model"
    assert "models.unpriced-model.price" in inner["message"]
    assert info.value.response.headers["x-should-retry"] == "false"
    assert counter.count == 1
    refused_locally(special, tag, before)


def test_unpriced_model_refused_on_responses_too(
    special: GatewayHarness, special_clients: Clients
) -> None:
    client, counter = special_clients.openai(special.create_key(name="unpriced-responses"))
    tag, headers = tagged()
    before = len(special.ledger())
    with pytest.raises(openai.PermissionDeniedError) as info:
        client.responses.create(model="unpriced-model", input="hi", extra_headers=headers)
    assert_openai_envelope(info.value, "model_not_priced")
    assert counter.count == 1
    refused_locally(special, tag, before)


def test_model_priced_through_its_upstream_name_is_served(
    gw: GatewayHarness, clients: Clients
) -> None:
    """``mystery-model`` has no price of its own but its upstream model (gpt-4o-mini) has
    one in the catalog: by the documented layering (pricing/catalog.py) it is priced."""
    client, _ = clients.openai(gw.create_key(name="mystery"))
    key_id = gw.last_key_id
    assert openai_chat(client, "mystery-model", {}).choices[0].message.content
    (row,) = gw.ledger(key_id)
    assert row.cost_nanos > 0
    assert row.requested_model == "mystery-model"


def test_model_not_allowed_for_key_openai(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.openai(
        gw.create_key(name="mini-only", allowed_models=["gpt-4o-mini"])
    )
    key_id = gw.last_key_id
    tag, headers = tagged()
    with pytest.raises(openai.PermissionDeniedError) as info:
        openai_chat(client, "gpt-4o", headers)
    assert info.value.status_code == 403
    inner = assert_openai_envelope(info.value, "model_not_allowed")
    assert "gpt-4o" in inner["message"]
    assert counter.count == 1
    assert sim_records_for(gw, tag) == []
    assert gw.ledger(key_id) == []
    # the allowed model still works with the same key
    assert openai_chat(client, "gpt-4o-mini", {}).choices[0].message.content
    assert len(gw.ledger(key_id)) == 1


def test_model_not_allowed_for_key_anthropic(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.anthropic(
        gw.create_key(name="haiku-only", allowed_models=["claude-haiku-4-5"])
    )
    key_id = gw.last_key_id
    tag, headers = tagged()
    with pytest.raises(anthropic.PermissionDeniedError) as info:
        anthropic_message(client, "claude-sonnet-4-6", headers)
    assert info.value.status_code == 403
    assert_anthropic_envelope(info.value, "permission_error")
    assert counter.count == 1
    assert sim_records_for(gw, tag) == []
    assert gw.ledger(key_id) == []


# --------------------------------------------------------------------------- 5. wrong dialect


def test_claude_model_on_openai_api(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.openai(gw.create_key(name="wrong-dialect"))
    tag, headers = tagged()
    before = len(gw.ledger())
    with pytest.raises(openai.BadRequestError) as info:
        openai_chat(client, "claude-sonnet-4-6", headers)
    inner = assert_openai_envelope(info.value, "model_wrong_api")
    assert "/v1/messages" in inner["message"]
    assert counter.count == 1
    refused_locally(gw, tag, before)


def test_gpt_model_on_anthropic_api(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.anthropic(gw.create_key(name="wrong-dialect"))
    tag, headers = tagged()
    before = len(gw.ledger())
    with pytest.raises(anthropic.BadRequestError) as info:
        anthropic_message(client, "gpt-4o-mini", headers)
    inner = assert_anthropic_envelope(info.value, "invalid_request_error")
    assert "/v1/chat/completions" in inner["message"]
    assert counter.count == 1
    refused_locally(gw, tag, before)


# --------------------------------------------------------------------------- 6. too large

HUGE = [{"role": "user", "content": "x" * 210_000}]


def test_oversized_body_openai(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.openai(gw.create_key(name="huge"))
    key_id = gw.last_key_id
    tag, headers = tagged()
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="gpt-4o-mini", messages=HUGE, max_tokens=5, extra_headers=headers
        )
    assert info.value.status_code == 413
    inner = assert_openai_envelope(info.value, "request_too_large")
    assert "200000" in inner["message"]
    assert counter.count == 1
    assert gw.ledger(key_id) == []
    assert sim_records_for(gw, tag) == []
    # the gateway still serves the next request, on the same client
    assert openai_chat(client, "gpt-4o-mini", {}).choices[0].message.content
    assert len(gw.ledger(key_id)) == 1


def test_oversized_body_anthropic(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.anthropic(gw.create_key(name="huge"))
    key_id = gw.last_key_id
    tag, headers = tagged()
    with pytest.raises(anthropic.APIStatusError) as info:
        client.messages.create(
            model="claude-haiku-4-5", messages=HUGE, max_tokens=5, extra_headers=headers
        )
    assert info.value.status_code == 413
    assert isinstance(info.value, anthropic.ContentTooLargeError)
    assert_anthropic_envelope(info.value, "request_too_large")
    assert counter.count == 1
    assert gw.ledger(key_id) == []
    assert sim_records_for(gw, tag) == []
    assert anthropic_message(client, "claude-haiku-4-5", {}).content
    assert len(gw.ledger(key_id)) == 1


def test_oversized_body_without_content_length(gw: GatewayHarness) -> None:
    """A chunked upload has no content-length: the limit still holds while reading."""
    secret = gw.create_key(name="huge-chunked")
    key_id = gw.last_key_id
    payload = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' + b"y" * 210_000

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(payload), 16_384):
            yield payload[start : start + 16_384]
        yield b'"}]}'

    with httpx2.Client(base_url=gw.url) as http:
        response = http.post(
            "/v1/chat/completions",
            content=chunks(),
            headers={"authorization": f"Bearer {secret}", "content-type": "application/json"},
        )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert gw.ledger(key_id) == []


# --------------------------------------------------------------------------- 8. upstream errors

RETRIED = [("openai", 429), ("openai", 500), ("openai", 529), ("anthropic", 429),
           ("anthropic", 500), ("anthropic", 529)]  # fmt: skip


@dataclass
class UpstreamErrorResult:
    dialect: str
    status: int
    key_id: str
    tag: str
    requests: int
    error: Exception


async def _upstream_error(gw: GatewayHarness, dialect: str, status: int) -> UpstreamErrorResult:
    secret = gw.create_key(name=f"upstream-{dialect}-{status}")
    key_id = gw.last_key_id
    tag, headers = tagged()
    headers["x-sim-status"] = str(status)
    counter = Counter()
    caught: Exception | None = None
    http = httpx2.AsyncClient(event_hooks={"request": [counter.on_request]})
    if dialect == "openai":
        async with openai.AsyncOpenAI(
            api_key=secret, base_url=gw.openai_base_url, http_client=http
        ) as oai:
            try:
                await oai.chat.completions.create(
                    model="gpt-4o-mini", messages=PROMPT, max_tokens=16, extra_headers=headers
                )
            except openai.APIStatusError as exc:
                caught = exc
    else:
        async with anthropic.AsyncAnthropic(
            api_key=secret, base_url=gw.url, http_client=http
        ) as ant:
            try:
                await ant.messages.create(
                    model="claude-haiku-4-5", messages=PROMPT, max_tokens=16, extra_headers=headers
                )
            except anthropic.APIStatusError as exc:
                caught = exc
    assert caught is not None, f"{dialect} {status}: no error raised"
    return UpstreamErrorResult(dialect, status, key_id, tag, counter.count, caught)


def _expected_body(dialect: str, status: int, record: sim_records.RequestRecord) -> Any:
    if dialect == "openai":
        return sim_wire.openai_error_body(status)
    return sim_wire.anthropic_error_body(status, record.request_id)


async def test_retryable_upstream_errors_pass_through_and_are_retried(gw: GatewayHarness) -> None:
    """429/500/529 reach the client byte-for-byte, the SDKs retry them (3 requests), and
    each attempt that reached the upstream is one zero-cost ledger row."""
    results = await asyncio.gather(*(_upstream_error(gw, d, s) for d, s in RETRIED))
    for result in results:
        where = f"{result.dialect} {result.status}"
        error = result.error
        assert isinstance(error, openai.APIStatusError | anthropic.APIStatusError)
        assert error.status_code == result.status, where
        if result.status == 429:
            expected_class = (
                openai.RateLimitError if result.dialect == "openai" else anthropic.RateLimitError
            )
            assert isinstance(error, expected_class), where
            assert error.response.headers["retry-after"] == "1", where
        else:
            expected_class = (
                openai.InternalServerError
                if result.dialect == "openai"
                else anthropic.InternalServerError
            )
            assert isinstance(error, expected_class), where
        if result.dialect == "anthropic" and result.status == 529:
            assert isinstance(error, anthropic.OverloadedError)
        assert result.requests == 3, where
        upstream = sim_records_for(gw, result.tag)
        assert len(upstream) == 3, where
        assert all(r.outcome == sim_records.ERROR for r in upstream), where
        # unchanged: Claude Code and the SDKs match on the provider's own wording
        last = max(upstream, key=lambda r: r.received_at)
        assert error.response.json() == _expected_body(result.dialect, result.status, last), where
        rows = gw.ledger(result.key_id)
        assert len(rows) == 3, where
        assert {row.upstream_request_id for row in rows} == {r.request_id for r in upstream}
        for row in rows:
            assert row.status == result.status, where
            assert row.cost_nanos == 0, where
            assert row.output_tokens == 0, where
            assert (row.error or "").startswith(f"upstream {result.status}"), where


def test_upstream_400_is_not_retried(gw: GatewayHarness, clients: Clients) -> None:
    client, counter = clients.openai(gw.create_key(name="upstream-400"))
    key_id = gw.last_key_id
    tag, headers = tagged()
    with pytest.raises(openai.BadRequestError) as info:
        openai_chat(client, "gpt-4o-mini", headers | {"x-sim-status": "400"})
    assert info.value.response.json() == sim_wire.openai_error_body(400)
    assert counter.count == 1
    (record,) = sim_records_for(gw, tag)
    (row,) = gw.ledger(key_id)
    assert row.status == 400
    assert row.cost_nanos == 0
    assert row.upstream_request_id == record.request_id

    client2, counter2 = clients.anthropic(gw.create_key(name="upstream-400-anthropic"))
    tag, headers = tagged()
    with pytest.raises(anthropic.BadRequestError) as info2:
        anthropic_message(client2, "claude-haiku-4-5", headers | {"x-sim-status": "400"})
    (record,) = sim_records_for(gw, tag)
    assert info2.value.response.json() == sim_wire.anthropic_error_body(400, record.request_id)
    assert counter2.count == 1


def test_the_providers_401_is_not_the_callers(gw: GatewayHarness, clients: Clients) -> None:
    """A provider's 401 is about the gateway's own key for it. Relayed, it told the caller
    that its key was wrong (Claude Code asks to log in again and retries it) and showed
    what the provider says of the operator's key (OpenAI quotes its last characters)."""
    client, counter = clients.openai(gw.create_key(name="upstream-401"))
    key_id = gw.last_key_id
    tag, headers = tagged()
    with pytest.raises(openai.InternalServerError) as info:
        openai_chat(client, "gpt-4o-mini", headers | {"x-sim-status": "401"})
    assert info.value.status_code == 502
    error = assert_openai_envelope(info.value, "upstream_auth_failed")
    assert "refused spendgate's credential" in error["message"]
    assert "providers.openai" in error["message"]
    assert "Incorrect API key" not in info.value.response.text
    assert info.value.response.headers["x-should-retry"] == "false"
    assert counter.count == 1  # not retried
    (record,) = sim_records_for(gw, tag)
    (row,) = gw.ledger(key_id)  # the provider's answer is still metered, at nothing
    assert (row.status, row.cost_nanos) == (401, 0)
    assert row.upstream_request_id == record.request_id

    client2, counter2 = clients.anthropic(gw.create_key(name="upstream-401-anthropic"))
    with pytest.raises(anthropic.InternalServerError) as info2:
        anthropic_message(client2, "claude-haiku-4-5", {"x-sim-status": "401"})
    assert info2.value.status_code == 502
    error = assert_anthropic_envelope(info2.value, "api_error")
    assert "providers.anthropic" in error["message"]
    assert "x-api-key" not in info2.value.response.text
    assert counter2.count == 1


@pytest.mark.parametrize("kind", ["openai", "anthropic"])
def test_a_providers_redirect_is_neither_followed_nor_relayed(
    gw: GatewayHarness, clients: Clients, kind: str
) -> None:
    """A provider that answers 307 elsewhere: followed, the gateway sent the provider's key
    (Anthropic's ``x-api-key``) and the prompt to that host; relayed, the client would
    follow it with its own key."""
    elsewhere = Simulator()
    gw.call(elsewhere.start())
    try:
        client, counter = (clients.anthropic if kind == "anthropic" else clients.openai)(
            gw.create_key(name=f"redirected-{kind}")
        )
        key_id = gw.last_key_id
        path = "/v1/messages" if kind == "anthropic" else "/v1/chat/completions"
        headers = {"x-sim-redirect": elsewhere.url + path}
        send = anthropic_message if kind == "anthropic" else openai_chat
        model = "claude-haiku-4-5" if kind == "anthropic" else "gpt-4o-mini"
        with pytest.raises((anthropic.InternalServerError, openai.InternalServerError)) as info:
            send(client, model, headers)
        assert elsewhere.records == []  # neither the provider's key nor the prompt went there
    finally:
        gw.call(elsewhere.stop())
    answer = info.value.response
    assert answer.status_code == 502
    assert "location" not in answer.headers
    assert answer.headers["x-should-retry"] == "false"
    assert counter.count == 1
    if kind == "openai":
        assert answer.json()["error"]["code"] == "upstream_redirect"
    assert f"providers.{kind}.base_url" in answer.json()["error"]["message"]
    (row,) = gw.ledger(key_id)  # the provider was reached: a row, at no cost
    assert (row.status, row.cost_nanos, row.usage_estimated) == (307, 0, False)


def test_upstream_quota_error_keeps_its_type(gw: GatewayHarness, clients: Clients) -> None:
    client, _ = clients.openai(gw.create_key(name="quota"), max_retries=0)
    headers = {"x-sim-status": "429", "x-sim-error-type": "insufficient_quota"}
    with pytest.raises(openai.RateLimitError) as info:
        openai_chat(client, "gpt-4o-mini", headers)
    assert info.value.code == "insufficient_quota"
    assert info.value.type == "insufficient_quota"


# --------------------------------------------------------------- 7 and 9. a broken upstream


def _closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def special(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    """A gateway with a short upstream timeout, two providers nobody listens on, and a
    model that no price source knows."""
    dead = f"http://127.0.0.1:{_closed_port()}"

    def configure(data: dict[str, Any]) -> None:
        data["server"]["upstream_timeout_s"] = 0.5
        data["server"]["upstream_connect_timeout_s"] = 2
        data["providers"]["dead-openai"] = {
            "kind": "openai",
            "base_url": dead + "/v1",
            "api_key_env": "SIM_OPENAI_KEY",
        }
        data["providers"]["dead-anthropic"] = {
            "kind": "anthropic",
            "base_url": dead,
            "api_key_env": "SIM_ANTHROPIC_KEY",
        }
        price = {"input": "1", "output": "2"}
        data["models"]["dead-gpt"] = {"provider": "dead-openai", "price": price}
        data["models"]["dead-claude"] = {"provider": "dead-anthropic", "price": price}
        data["models"]["unpriced-model"] = {
            "provider": "openai",
            "upstream_model": "gpt-unpriced-preview",
        }

    path: Path = tmp_path_factory.mktemp("special") / "spendgate.db"
    harness = GatewayHarness(path, configure=configure).start()
    try:
        yield harness
    finally:
        harness.stop()


async def test_unreachable_upstream_is_502_and_retryable(special: GatewayHarness) -> None:
    secret = special.create_key(name="unreachable")
    key_id = special.last_key_id
    openai_counter, anthropic_counter = Counter(), Counter()

    async def via_openai() -> openai.APIStatusError:
        http = httpx2.AsyncClient(event_hooks={"request": [openai_counter.on_request]})
        async with openai.AsyncOpenAI(
            api_key=secret, base_url=special.openai_base_url, http_client=http
        ) as client:
            with pytest.raises(openai.InternalServerError) as info:
                await client.chat.completions.create(
                    model="dead-gpt", messages=PROMPT, max_tokens=5
                )
        return info.value

    async def via_anthropic() -> anthropic.APIStatusError:
        http = httpx2.AsyncClient(event_hooks={"request": [anthropic_counter.on_request]})
        async with anthropic.AsyncAnthropic(
            api_key=secret, base_url=special.url, http_client=http
        ) as client:
            with pytest.raises(anthropic.InternalServerError) as info:
                await client.messages.create(model="dead-claude", messages=PROMPT, max_tokens=5)
        return info.value

    oai_error, ant_error = await asyncio.gather(via_openai(), via_anthropic())
    assert oai_error.status_code == 502
    assert_openai_envelope(oai_error, "upstream_unavailable")
    assert "dead-openai" in oai_error.response.json()["error"]["message"]
    for error in (oai_error, ant_error):  # why, never where: the provider may be internal
        message = error.response.json()["error"]["message"]
        assert message.endswith("could not be reached: the connection was refused."), message
        assert "127.0.0.1" not in message
    assert ant_error.status_code == 502
    assert_anthropic_envelope(ant_error, "api_error")
    for error in (oai_error, ant_error):
        assert error.response.headers["x-should-retry"] == "true"
    # x-should-retry: true, so the SDKs retried (default max_retries=2)
    assert openai_counter.count == 3
    assert anthropic_counter.count == 3
    # the request never reached an upstream: no row
    assert special.ledger(key_id) == []
    async with httpx2.AsyncClient(base_url=special.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        # and the healthy providers of the same gateway still answer
        ok = await http.post(
            "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": PROMPT, "max_tokens": 5},
            headers={"authorization": f"Bearer {secret}"},
        )
    assert ok.status_code == 200
    assert len(special.ledger(key_id)) == 1


def test_upstream_timeout_openai(special: GatewayHarness, special_clients: Clients) -> None:
    client, counter = special_clients.openai(special.create_key(name="timeout"), max_retries=0)
    key_id = special.last_key_id
    tag, headers = tagged()
    with pytest.raises(openai.InternalServerError) as info:
        openai_chat(client, "gpt-4o-mini", headers | {"x-sim-delay-ms": "1500"})
    error = info.value
    assert error.status_code == 504
    assert_openai_envelope(error, "upstream_timeout")
    assert error.response.headers["x-should-retry"] == "true"
    assert counter.count == 1
    _assert_timeout_row(special, key_id, tag)


def test_upstream_timeout_anthropic(special: GatewayHarness, special_clients: Clients) -> None:
    client, counter = special_clients.anthropic(special.create_key(name="timeout"), max_retries=0)
    key_id = special.last_key_id
    tag, headers = tagged()
    with pytest.raises(anthropic.InternalServerError) as info:
        anthropic_message(client, "claude-haiku-4-5", headers | {"x-sim-delay-ms": "1500"})
    error = info.value
    assert error.status_code == 504
    assert isinstance(error, anthropic.GatewayTimeoutError)
    assert_anthropic_envelope(error, "timeout_error")
    assert error.response.headers["x-should-retry"] == "true"
    assert counter.count == 1
    _assert_timeout_row(special, key_id, tag)


def _assert_timeout_row(harness: GatewayHarness, key_id: str, tag: str) -> None:
    (record,) = sim_records_for(harness, tag)  # it reached the upstream...
    (row,) = harness.ledger(key_id)  # ...so it is metered, as an estimate
    assert row.status == 504
    assert row.usage_estimated is True
    assert row.input_tokens > 0
    assert row.output_tokens == 0
    assert row.cost_nanos > 0
    assert row.error == "upstream timeout"
    # the gateway gave up on the upstream request: the simulator saw it go
    assert harness.wait_for(lambda: record.outcome == sim_records.DISCONNECTED, timeout=3)


# --------------------------------------------------------------------------- 12. afterwards


def assert_ledger_matches_upstream(harness: GatewayHarness) -> None:
    """Every upstream request that answered with headers has exactly one ledger row."""
    rows = harness.ledger()
    by_upstream: dict[str, int] = {}
    for row in rows:
        if row.upstream_request_id is not None:
            by_upstream[row.upstream_request_id] = by_upstream.get(row.upstream_request_id, 0) + 1
    assert all(count == 1 for count in by_upstream.values()), by_upstream
    seen = {r.request_id for r in harness.sim.records}
    assert set(by_upstream) <= seen
    for record in list(harness.sim.records):
        assert record.finished, record.to_json()
        answered = record.stream or record.outcome in (sim_records.OK, sim_records.ERROR)
        if answered:
            assert by_upstream.get(record.request_id) == 1, record.to_json()
    # one row per request that reached the upstream (timeouts included), none otherwise
    assert len(rows) == len(harness.sim.records)


@pytest.mark.parametrize("harness_name", ["gw", "special"])
def test_gateway_healthy_and_ledger_consistent_afterwards(
    request: pytest.FixtureRequest, harness_name: str
) -> None:
    harness: GatewayHarness = request.getfixturevalue(harness_name)
    with clients_for(harness) as made:
        with httpx2.Client(base_url=harness.url) as http:
            assert http.get("/healthz").status_code == 200
            assert http.get("/readyz").status_code == 200
        client, counter = made.openai(harness.create_key(name="after"))
        key_id = harness.last_key_id
        reply = openai_chat(client, "gpt-4o-mini", {})
        assert reply.choices[0].message.content
        assert counter.count == 1
        (row,) = harness.ledger(key_id)
        assert row.status == 200
        assert row.cost_nanos > 0
        assert not row.usage_estimated
        assert harness.wait_for(lambda: harness.gateway.inflight == 0)
        assert_ledger_matches_upstream(harness)
