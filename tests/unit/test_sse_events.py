"""`parse_event` reads the common event shapes (one `data: ` line; an `event: ` line and
one `data: ` line) without splitting lines: it must read every event exactly as the
line-by-line reading does, the common shapes and everything near them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spendgate.upstream.sse import EventSplitter, SseEvent, parse_event, parse_lines

_FIELD = st.sampled_from([b"data", b"event", b"id", b"retry", b"", b"dat", b"data ", b"Data"])
_VALUE = st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"x")) | st.sampled_from(
    [b"", b" ", b"  x", b'{"a": 1}', b"[DONE]", b"\r", b"x\ry", b" \xff\xfe", b"content_block"]
)
_LINE = st.tuples(_FIELD, st.sampled_from([b":", b": ", b":  ", b""]), _VALUE).map(b"".join)


@given(st.lists(_LINE, min_size=1, max_size=4))
def test_the_fast_reading_is_the_line_by_line_reading(lines: list[bytes]) -> None:
    raw = b"\n".join(lines) + b"\n\n"
    if b"\n\n" in raw[:-2]:  # the splitter never cuts an event with a blank line inside
        return
    assert parse_event(raw) == parse_lines(raw)


def test_the_common_shapes() -> None:
    chat = b'data: {"choices": []}\n\n'
    assert parse_event(chat) == SseEvent(chat, None, b'{"choices": []}')
    claude = b'event: content_block_delta\ndata: {"type": "x"}\n\n'
    assert parse_event(claude) == SseEvent(claude, "content_block_delta", b'{"type": "x"}')
    two_data = b"data: a\ndata: b\n\n"
    assert parse_event(two_data).data == b"a\nb"
    lone_cr = b"data: a\rdata: b\n\n"  # a lone CR ends a line too
    assert parse_event(lone_cr).data == b"a\nb"
    no_space = b"event:ping\ndata:{}\n\n"
    assert parse_event(no_space) == SseEvent(no_space, "ping", b"{}")


def test_a_stream_split_anywhere_gives_the_same_events() -> None:
    stream = (
        b'event: message_start\ndata: {"a": 1}\n\n'
        b"event: ping\ndata: {}\n\n"
        b'data: {"b": 2}\r\n\r\n'
        b": comment\n\n"
        b"data: [DONE]\n\n"
    )
    whole = EventSplitter().feed(stream)
    for cut in range(1, len(stream)):
        splitter = EventSplitter()
        assert splitter.feed(stream[:cut]) + splitter.feed(stream[cut:]) == whole
    assert [e.data for e in whole] == [b'{"a": 1}', b"{}", b'{"b": 2}', b"", b"[DONE]"]


@pytest.mark.parametrize("end", [b"", b"\n", b"\r\n", b"\r"])
def test_flush_reads_the_event_the_stream_closed_in(end: bytes) -> None:
    """A stream that closes after its last event's data, before the blank line: that event
    still counts (google-genai reads it); one cut inside its JSON, or only blank lines, not."""
    splitter = EventSplitter()
    assert splitter.feed(b'data: {"a": 1}\r\n\r\ndata: {"b": 2}' + end) == [
        SseEvent(b'data: {"a": 1}\n\n', None, b'{"a": 1}')
    ]
    assert splitter.flush() == [SseEvent(b'data: {"b": 2}\n\n', None, b'{"b": 2}')]
    assert splitter.flush() == []
    assert splitter.pending() == b""
    cut = EventSplitter()
    assert cut.feed(b'event: message_delta\ndata: {"usage": {"output' + end) == []
    assert cut.flush() == []
    done = EventSplitter()
    assert done.feed(b"data: [DONE]" + end) == []
    assert [event.data for event in done.flush()] == [b"[DONE]"]
    blank = EventSplitter()
    assert blank.feed(b"\n" + end) == []
    assert blank.flush() == []
