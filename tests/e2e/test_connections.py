"""Bounded client connections, over raw sockets against the real gateway:

* a request head trickled a byte at a time (slowloris) is closed once
  ``server.request_header_timeout_s`` has passed since its first byte, while other
  clients are served; a connection that sends nothing at all, or stays idle after its
  answer, is closed after ``server.keepalive_timeout_s``;
* a body that stops arriving is answered ``408 request_timeout`` in the caller's dialect
  after ``server.request_body_timeout_s``, on every route that reads one (the dashboard's
  sign-in form, which anyone may post to, and the admin API too);
* one address may hold ``server.max_connections_per_address`` connections; the next is
  answered ``503`` and closed, and a freed place is taken again;
* a client that stops reading a long stream is dropped once its connection's send buffer
  has been full for ``server.client_send_timeout_s``: the request ends as disconnected,
  metered, instead of holding its upstream call and reservation for as long as the
  socket stays open; a client that reads slowly but steadily gets the whole stream;
* header values a client may send that Python reads differently: a retry count in
  non-ASCII digits, or a huge one, and a key that is not UTF-8 (401, not 500).

The timeouts here are fractions of a second; each check waits for the outcome with a
generous cap instead of measuring it, so a loaded machine only makes the test slower.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx2
import openai
import orjson
import pytest

from harness import GatewayHarness

HEAD_TIMEOUT_S = 0.5
BODY_TIMEOUT_S = 0.5
KEEPALIVE_S = 0.8
PER_ADDRESS = 6
SEND_TIMEOUT_S = 2.0
CAP_S = 15.0  # the longest any check waits for what it expects
ADMIN_TOKEN = "connections-admin-token"

CHAT = orjson.dumps(
    {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    def configure(data: dict[str, Any]) -> None:
        data["server"].update(
            request_header_timeout_s=HEAD_TIMEOUT_S,
            request_body_timeout_s=BODY_TIMEOUT_S,
            keepalive_timeout_s=KEEPALIVE_S,
            max_connections_per_address=PER_ADDRESS,
            client_send_timeout_s=SEND_TIMEOUT_S,
        )

    harness = GatewayHarness(
        tmp_path_factory.mktemp("connections") / "spendgate.db",
        configure=configure,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN_TOKEN},
    ).start()
    yield harness
    harness.stop()


@pytest.fixture(scope="module")
def secret(gw: GatewayHarness) -> str:
    return gw.create_key(name="sockets", user="sam")


def connect(gw: GatewayHarness) -> socket.socket:
    return socket.create_connection(("127.0.0.1", gw.running.port), timeout=CAP_S)


def closed_by_peer(sock: socket.socket, *, trickle: bytes = b"") -> tuple[bool, bytes]:
    """Reads until the gateway closes the connection (or ``CAP_S`` passes), sending one
    byte of ``trickle`` every 50 ms meanwhile. Returns (closed, what was received)."""
    sock.settimeout(0.05)
    received = b""
    deadline = time.monotonic() + CAP_S
    sent = 0
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            if sent < len(trickle):
                try:
                    sock.sendall(trickle[sent : sent + 1])
                except OSError:  # closed under us
                    return True, received
                sent += 1
            continue
        except ConnectionResetError:
            return True, received
        if not chunk:
            return True, received
        received += chunk
    return False, received


def answer_while_trickling(sock: socket.socket, trickle: bytes) -> bytes:
    """What the gateway answers (its first bytes) while ``trickle`` is sent a byte every
    50 ms; b"" if nothing came within ``CAP_S``."""
    sock.settimeout(0.05)
    deadline = time.monotonic() + CAP_S
    sent = 0
    while time.monotonic() < deadline:
        try:
            return sock.recv(65536)
        except TimeoutError:
            if sent < len(trickle):
                sock.sendall(trickle[sent : sent + 1])
                sent += 1
    return b""


def one_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and body of the next response (``content-length`` framed)."""
    sock.settimeout(CAP_S)
    received = b""
    while b"\r\n\r\n" not in received:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole response: {received[:200]!r}"
        received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the whole body"
        body += chunk
    return head, body


def healthy(gw: GatewayHarness) -> bool:
    return httpx2.get(gw.url + "/healthz", timeout=CAP_S).status_code == 200


def request_bytes(secret: str, body: bytes, *, extra: str = "", length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    head = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n"
        f"Authorization: Bearer {secret}\r\ncontent-type: application/json\r\n"
        f"content-length: {size}\r\n{extra}\r\n"
    )
    return head.encode() + body


def test_a_trickled_request_head_is_closed_after_the_header_timeout(gw: GatewayHarness) -> None:
    sock = connect(gw)
    try:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\n")
        # ~45 s of trickle at one byte per 50 ms if nobody stopped it
        closed, received = closed_by_peer(sock, trickle=b"x-slow: " + b"a" * 900)
        assert closed, "the gateway kept a request head open past its timeout"
        assert received == b""  # no request was ever read, so nothing is answered
        assert healthy(gw)  # others are served meanwhile
    finally:
        sock.close()


def test_a_body_sent_apart_from_its_head_does_not_start_the_header_timeout(
    gw: GatewayHarness, secret: str
) -> None:
    """SDKs write a request's head and its body in two sends, which the gateway may read
    apart: the body's bytes are not a new head, and an answer slower than the header
    timeout (a long stream, a slow model) is not cut by it."""
    slow_ms = int(HEAD_TIMEOUT_S * 1000 * 4)
    extra = f"x-sim-delay-ms: {slow_ms}\r\n"
    whole = request_bytes(secret, CHAT, extra=extra)
    head_end = whole.index(b"\r\n\r\n") + 4
    sock = connect(gw)
    try:
        sock.sendall(whole[:head_end])
        time.sleep(0.1)  # the head is read alone (a loaded gateway reads it later: both)
        sock.sendall(whole[head_end:])
        head, body = one_response(sock)
        assert head.startswith(b"HTTP/1.1 200"), head[:200]
        assert orjson.loads(body)["choices"]
        # the connection is still usable: a second request on it is answered
        sock.sendall(request_bytes(secret, CHAT))
        assert one_response(sock)[0].startswith(b"HTTP/1.1 200")
    finally:
        sock.close()


def test_a_stream_longer_than_the_header_timeout_reaches_its_end_through_the_sdk(
    gw: GatewayHarness, secret: str
) -> None:
    """The same through the OpenAI SDK, which writes a request's head and body apart: a
    streamed answer that lasts several header timeouts arrives whole, usage included."""
    client = openai.OpenAI(api_key=secret, base_url=gw.openai_base_url, max_retries=0)
    delay_ms = int(HEAD_TIMEOUT_S * 1000)
    with client:
        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Tell a story."}],
            max_tokens=40,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={"x-sim-output-tokens": "8", "x-sim-chunk-delay-ms": str(delay_ms)},
        )
        chunks = list(stream)
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 8
    # a header timeout between events: the stream outlived it several times over
    assert len(chunks) >= 4
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(
    gw: GatewayHarness, secret: str
) -> None:
    silent = connect(gw)  # sends nothing at all
    used = connect(gw)  # one request, then idle
    try:
        used.sendall(request_bytes(secret, CHAT))
        closed_silent, _ = closed_by_peer(silent)
        closed_used, received = closed_by_peer(used)
        assert closed_silent
        assert closed_used
        assert received.startswith(b"HTTP/1.1 200")
    finally:
        silent.close()
        used.close()


def test_a_body_that_stops_arriving_is_a_408_in_the_dialect(
    gw: GatewayHarness, secret: str
) -> None:
    before = len(gw.ledger())
    sock = connect(gw)
    try:
        sock.sendall(request_bytes(secret, CHAT[:10], length=len(CHAT)))
        head, body = one_response(sock)
        assert head.startswith(b"HTTP/1.1 408"), head
        error = orjson.loads(body)["error"]
        assert error["code"] == "request_timeout"
        assert "server.request_body_timeout_s" in error["message"]
        assert len(gw.ledger()) == before  # nothing went upstream
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("path", "extra", "body"),
    [
        ("/ui/login", "content-type: application/x-www-form-urlencoded\r\n", b"token=abc"),
        (
            "/admin/keys",
            f"authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: application/json\r\n",
            b'{"name": "slow", "user": "sam"}',
        ),
    ],
)
def test_a_body_that_stops_arriving_is_a_408_on_every_route(
    gw: GatewayHarness, path: str, extra: str, body: bytes
) -> None:
    """The sign-in form needs no credential: a body trickled to it held the connection for
    as long as the client kept sending, past every timeout (slowloris)."""
    sock = connect(gw)
    try:
        length = f"content-length: {len(body) + 50}\r\n"
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: gw\r\n{extra}{length}\r\n".encode() + body)
        received = answer_while_trickling(sock, b"x" * 40)  # never the whole body
        assert received.startswith(b"HTTP/1.1 408"), received[:200]
        assert b"server.request_body_timeout_s" in received
    finally:
        sock.close()
    assert healthy(gw)


def test_connections_per_address_are_capped(gw: GatewayHarness) -> None:
    held = [connect(gw) for _ in range(PER_ADDRESS)]
    try:
        for sock in held:  # each one accepted: a request on it is answered
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
            assert one_response(sock)[0].startswith(b"HTTP/1.1 200")
        extra = connect(gw)
        closed, received = closed_by_peer(extra)
        extra.close()
        assert closed
        assert received.startswith(b"HTTP/1.1 503"), received[:200]
        assert b"Too many connections" in received
        held.pop().close()  # a place is freed ...
        assert gw.wait_for(lambda: gw.running.runner.guard.open_from("127.0.0.1") < PER_ADDRESS)
        assert healthy(gw)  # ... and taken again
    finally:
        for sock in held:
            sock.close()


@pytest.mark.parametrize(("sent", "recorded"), [("²", 0), ("99999999999999999999", 1000)])
def test_retry_counts_python_reads_differently(
    gw: GatewayHarness, sent: str, recorded: int
) -> None:
    secret = gw.create_key(name=f"retries-{recorded}", user="ria")
    key_id = gw.last_key_id
    response = httpx2.post(
        gw.openai_base_url + "/chat/completions",
        content=CHAT,
        headers={
            "authorization": f"Bearer {secret}",
            "content-type": "application/json",
            "x-stainless-retry-count": sent.encode(),
        },
        timeout=CAP_S,
    )
    assert response.status_code == 200, response.text
    [row] = gw.ledger(key_id)
    assert row.retry_count == recorded


def test_a_key_that_is_not_utf8_is_a_401(gw: GatewayHarness) -> None:
    sock = connect(gw)
    try:
        sock.sendall(
            request_bytes("sk-sg-\xff\xfe", CHAT).replace(b"\xc3\xbf\xc3\xbe", b"\xff\xfe")
        )
        head, body = one_response(sock)
        assert head.startswith(b"HTTP/1.1 401"), head
        assert orjson.loads(body)["error"]["code"] == "invalid_api_key"
    finally:
        sock.close()


def rows_within(gw: GatewayHarness, key_id: str, seconds: float) -> list[Any]:
    """The key's ledger rows once there is one (polled from this thread: a harness read
    inside `wait_for`'s predicate would block the gateway's own loop)."""
    deadline = time.monotonic() + seconds
    while not (rows := gw.ledger(key_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return rows


def long_stream(secret: str, tokens: int, choices: int) -> bytes:
    """A streamed chat answer of ``choices`` x ``tokens`` output tokens: megabytes of
    events, more than the sockets' buffers hold."""
    body = orjson.dumps(
        {
            "model": "gpt-4o-mini",
            "max_tokens": tokens,
            "n": choices,
            "stream": True,
            "messages": [{"role": "user", "content": "tell a long story"}],
        }
    )
    return request_bytes(secret, body, extra=f"x-sim-output-tokens: {tokens}\r\n")


def test_a_client_that_stops_reading_is_dropped_and_its_request_metered(
    gw: GatewayHarness,
) -> None:
    secret = gw.create_key(name="stalled", user="sam")
    key_id = gw.last_key_id
    before = len(gw.sim.records)
    sock = connect(gw)
    try:
        sock.sendall(long_stream(secret, 16_000, 16))
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        # ... and nothing more read: the gateway's send buffer fills and stays full
        rows = rows_within(gw, key_id, CAP_S + SEND_TIMEOUT_S)
    finally:
        sock.close()
    [row] = rows
    assert row.client_disconnected
    assert row.error == "client disconnected mid-stream"
    assert row.output_tokens > 0  # what was relayed is metered (estimated)
    [record] = gw.sim.records[before:]
    assert gw.wait_for(lambda: record.outcome != "pending", timeout=CAP_S)
    assert not record.completed  # the upstream call was dropped too, not read to its end
    assert healthy(gw)


def test_a_client_that_reads_slowly_gets_the_whole_stream(gw: GatewayHarness) -> None:
    """Reads 64 KiB at a time with short pauses, through a small receive buffer: the
    gateway's send buffer fills and drains again many times, never for the whole send
    timeout, and the stream arrives whole."""
    secret = gw.create_key(name="slow-reader", user="sam")
    key_id = gw.last_key_id
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)  # before connecting
    sock.settimeout(CAP_S)
    received = b""
    try:
        sock.connect(("127.0.0.1", gw.running.port))
        sock.sendall(long_stream(secret, 6_000, 12))
        while not received.endswith(b"\r\n0\r\n\r\n"):  # the last chunk of the answer
            chunk = sock.recv(65536)
            assert chunk, f"closed after {len(received):,} bytes"
            received += chunk
            time.sleep(0.005)
    finally:
        sock.close()
    assert len(received) > 6_000_000  # more than the send buffer holds (tcp_wmem: 4 MiB)
    assert b"data: [DONE]" in received[-200:]
    [row] = rows_within(gw, key_id, CAP_S)
    assert not row.client_disconnected
    assert (row.status, row.output_tokens, row.usage_estimated) == (200, 72_000, False)
