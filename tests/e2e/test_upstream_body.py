"""What goes upstream is the body as the gateway read and priced it.

A body holding a key twice (`model`, `max_tokens`) goes upstream serialized again from what
orjson read (the last of each), each key once: a provider's parser that keeps the first
would otherwise serve a model the key may not use, with a ceiling never priced.

Compressed request bodies (`Content-Encoding`): what aiohttp decodes (gzip, deflate) is
served as if sent plain, and goes upstream decoded *without* the client's header (it once
went with it, and the provider could not read the body: a 500 relayed to the client); a
coding this gateway cannot read is a `415` naming what it reads; a body that does not
decode as its coding says is a `400`; a small body that decodes past `server.max_body_bytes`
is a `413`. None of the refusals reaches the provider or writes a ledger row."""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest

from harness import GatewayHarness

CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "Say hello in five words. " * 40}],
    "max_tokens": 16,
}
MESSAGES = {
    "model": "claude-haiku-4-5",
    "messages": [{"role": "user", "content": "Say hello."}],
    "max_tokens": 16,
}


BOTH_DIALECTS = pytest.mark.parametrize(
    ("path", "body"), [("/v1/chat/completions", CHAT), ("/v1/messages", MESSAGES)]
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["server"]["max_body_bytes"] = 1024 * 1024
        data["budgets"] = [{"name": "ml", "scope": "team", "match": "ml", "limit_usd": "100"}]

    harness = GatewayHarness(
        tmp_path_factory.mktemp("encoding") / "spendgate.db", configure=configure
    ).start()
    yield harness
    harness.stop()


class Compressing(httpx2.HTTPTransport):
    """What a client that compresses its requests sends: the SDK's body, gzip-compressed,
    with `content-encoding: gzip`."""

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        body = gzip.compress(request.read())
        headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
        headers["content-encoding"] = "gzip"
        sent = httpx2.Request(request.method, request.url, headers=headers, content=body)
        return super().handle_request(sent)


def post(gw: GatewayHarness, path: str, secret: str, body: bytes, coding: str) -> httpx2.Response:
    auth = (
        {"x-api-key": secret} if path == "/v1/messages" else {"authorization": f"Bearer {secret}"}
    )
    headers = {**auth, "content-type": "application/json", "content-encoding": coding}
    return httpx2.post(gw.url + path, content=body, headers=headers, timeout=30)


def test_an_sdk_request_sent_gzip_compressed_is_served_and_metered(gw: GatewayHarness) -> None:
    secret = gw.create_key(name="gzip-sdk", team="ml")
    before = len(gw.sim.records)
    with httpx2.Client(transport=Compressing()) as http:
        client = openai.OpenAI(
            api_key=secret, base_url=gw.openai_base_url, http_client=http, max_retries=0
        )
        answer = client.chat.completions.create(**CHAT)  # type: ignore[call-overload]
    assert answer.usage is not None
    assert answer.usage.prompt_tokens > 0
    [record] = gw.sim.records[before:]
    assert "content-encoding" not in {name.lower() for name in record.headers}
    assert record.body["messages"] == CHAT["messages"]
    [row] = gw.ledger(gw.last_key_id)
    assert (row.status, row.input_tokens) == (200, record.input_tokens)
    assert row.input_tokens == answer.usage.prompt_tokens


@pytest.mark.parametrize("coding", ["gzip", "deflate", "GZIP"])
def test_gzip_and_deflate_bodies_go_upstream_decoded(gw: GatewayHarness, coding: str) -> None:
    secret = gw.create_key(name=f"plain-{coding}", team="ml")
    raw = orjson.dumps(CHAT)
    body = zlib.compress(raw) if coding == "deflate" else gzip.compress(raw)
    before = len(gw.sim.records)
    reply = post(gw, "/v1/chat/completions", secret, body, coding)
    assert reply.status_code == 200, reply.text
    [record] = gw.sim.records[before:]
    assert (record.body["model"], record.body["messages"]) == (CHAT["model"], CHAT["messages"])
    assert "content-encoding" not in {name.lower() for name in record.headers}
    [row] = gw.ledger(gw.last_key_id)
    assert row.input_tokens == reply.json()["usage"]["prompt_tokens"]


@pytest.mark.parametrize("coding", ["br", "zstd"])
def test_a_coding_aiohttp_cannot_decode_is_a_415_both_sdks_read(
    gw: GatewayHarness, coding: str
) -> None:
    """Refused while the head is parsed, before a route (so a dialect) is chosen."""
    secret = gw.create_key(name=f"refused-{coding}", team="ml")
    before = len(gw.sim.records)
    reply = post(gw, "/v1/chat/completions", secret, b"\x28\xb5\x2f\xfd" * 8, coding)
    assert reply.status_code == 415, reply.text
    assert reply.headers["x-should-retry"] == "false"
    assert reply.headers["accept-encoding"] == "gzip, deflate"
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_content_encoding"
    assert f"'{coding}'" in error["message"]
    assert "gzip, deflate" in error["message"]
    assert len(gw.sim.records) == before
    assert gw.ledger(gw.last_key_id) == [] == gw.ledger(gw.last_key_id, blocked=True)


@BOTH_DIALECTS
def test_an_unknown_coding_is_a_415_in_the_callers_dialect(
    gw: GatewayHarness, path: str, body: dict[str, Any]
) -> None:
    secret = gw.create_key(name="x-gzip", team="ml")
    before = len(gw.sim.records)
    reply = post(gw, path, secret, gzip.compress(orjson.dumps(body)), "x-gzip")
    assert reply.status_code == 415, reply.text
    assert reply.headers["x-should-retry"] == "false"
    payload = reply.json()
    if path == "/v1/messages":
        assert payload["type"] == "error"
        assert payload["error"]["type"] == "invalid_request_error"
    else:
        assert payload["error"]["code"] == "unsupported_content_encoding"
    assert "'x-gzip'" in payload["error"]["message"]
    assert len(gw.sim.records) == before
    assert gw.ledger(gw.last_key_id) == []


@BOTH_DIALECTS
def test_a_body_that_does_not_decode_is_a_400_in_the_callers_dialect(
    gw: GatewayHarness, path: str, body: dict[str, Any]
) -> None:
    secret = gw.create_key(name="corrupt", team="ml")
    before = len(gw.sim.records)
    reply = post(gw, path, secret, orjson.dumps(body), "gzip")  # says gzip, is not
    assert reply.status_code == 400, reply.text
    assert reply.headers["x-should-retry"] == "false"
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert "not valid gzip" in error["message"]
    assert len(gw.sim.records) == before
    assert gw.ledger(gw.last_key_id) == []


def test_a_small_body_that_decodes_past_the_limit_is_a_413(gw: GatewayHarness) -> None:
    """60 KB of gzip that decodes to 4 MB against a 1 MB `server.max_body_bytes`."""
    secret = gw.create_key(name="bomb", team="ml")
    content = "a" * (4 * 1024 * 1024)
    raw = orjson.dumps({**CHAT, "messages": [{"role": "user", "content": content}]})
    body = gzip.compress(raw)
    assert len(body) < 64 * 1024
    before = len(gw.sim.records)
    reply = post(gw, "/v1/chat/completions", secret, body, "gzip")
    assert reply.status_code == 413, reply.text
    assert reply.json()["error"]["code"] == "request_too_large"
    assert len(gw.sim.records) == before
    assert gw.ledger(gw.last_key_id) == []


def _pairs(raw: bytes) -> list[tuple[str, Any]]:
    """The top-level keys of a JSON body in order, duplicates kept."""
    found: list[list[tuple[str, Any]]] = []
    json.loads(raw, object_pairs_hook=lambda pairs: found.append(pairs) or dict(pairs))
    return found[-1]


@pytest.mark.parametrize(
    ("path", "model", "other"),
    [
        ("/v1/chat/completions", "gpt-4o-mini", "gpt-4o"),
        ("/v1/messages", "claude-haiku-4-5", "claude-sonnet-4-6"),
    ],
)
def test_a_key_sent_twice_reaches_the_provider_once_as_it_was_priced(
    gw: GatewayHarness, path: str, model: str, other: str
) -> None:
    """A body naming `model` and `max_tokens` twice: a parser that keeps the first of each
    would serve a model the key may not use, with a ceiling never priced. What goes upstream
    is the body as the gateway read it (orjson keeps the last), each key once."""
    secret = gw.create_key(name="twice", team="ml", allowed_models=[model])
    turn = orjson.dumps(MESSAGES["messages"]).decode()
    raw = (
        f'{{"model": "{other}", "max_tokens": 50000, "messages": {turn}, '
        f'"model": "{model}", "max_tokens": 16}}'
    ).encode()
    before = len(gw.sim.records)
    reply = post(gw, path, secret, raw, "identity")
    assert reply.status_code == 200, reply.text
    [record] = gw.sim.records[before:]
    sent = _pairs(record.raw_body)
    assert [name for name, _ in sent].count("model") == 1
    assert [name for name, _ in sent].count("max_tokens") == 1
    assert dict(sent)["model"] == model
    assert dict(sent)["max_tokens"] == 16
    [row] = gw.ledger(gw.last_key_id)
    assert row.requested_model == model
    assert row.output_ceiling is None or row.output_ceiling <= 16
