"""What a stream keeps in memory: the SSE splitter (linear, bounded) and the generated
text (folded into counts past a bound), checked against the plain computation."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.domain import tokens
from spendgate.domain.output_tokens import GeneratedText
from spendgate.pipeline.relay import OutputGuard
from spendgate.upstream.sse import EventSplitter, EventTooLarge

STREAM = (
    b'event: message_start\r\ndata: {"a": 1}\r\n\r\n'
    b": comment\n\n"
    b'data: {"b": 2}\ndata: {"c": 3}\n\n'
    b"event: ping\ndata: {}\n\n"
    + b"".join(b'data: {"n": %d, "t": "%s"}\n\n' % (i, b"x" * i) for i in range(60))
)


def split_all(stream: bytes, cuts: list[int], max_bytes: int = 1 << 20) -> list[bytes]:
    splitter = EventSplitter(max_bytes)
    events = []
    edges = [0, *sorted(cuts), len(stream)]
    for start, end in itertools.pairwise(edges):
        events += [event.raw for event in splitter.feed(stream[start:end])]
    assert splitter.pending() == b""
    return events


def test_events_are_the_same_however_the_bytes_are_cut() -> None:
    whole = split_all(STREAM, [])
    assert len(whole) == 64  # a comment-only event is kept too, byte for byte
    rng = random.Random(7)
    for _ in range(300):
        cuts = rng.sample(range(1, len(STREAM)), rng.randint(1, 40))
        assert split_all(STREAM, cuts) == whole
    assert split_all(STREAM, list(range(1, len(STREAM)))) == whole  # a byte at a time


def test_an_event_past_the_bound_raises_and_a_smaller_one_does_not() -> None:
    big = b"data: " + b"y" * 5000 + b"\n\n"
    assert len(split_all(big, list(range(100, 5000, 100)), max_bytes=6000)) == 1
    splitter = EventSplitter(4096)
    for start in range(0, 4000, 100):
        assert splitter.feed(big[start : start + 100]) == []
    with pytest.raises(EventTooLarge, match="max_upstream_event_bytes"):
        splitter.feed(big[4000:4200])


def test_a_large_event_in_small_chunks_is_joined_once() -> None:
    """Linear: an unfinished event's chunks are kept apart until it ends (the old splitter
    copied the whole buffer on every chunk: quadratic)."""
    splitter = EventSplitter()
    body = b"data: " + b"z" * (8 * 1024 * 1024)
    for start in range(0, len(body), 4096):
        assert splitter.feed(body[start : start + 4096]) == []
    assert len(splitter._parts) == len(range(0, len(body), 4096))
    [event] = splitter.feed(b"\n\n")
    assert event.raw == body + b"\n\n"


TEXT = "The quick brown fox jumps over the lazy dog, and then writes some code. " * 40


def pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def test_unfolded_text_counts_as_the_whole_text() -> None:
    generated = GeneratedText()
    for piece in pieces(TEXT, 7):
        generated.append(piece)
    assert not generated.folded
    assert generated.kept_text() == TEXT
    for model in ("gpt-4o-mini", "claude-sonnet-4-5", "gpt-4"):
        assert generated.tokens_for(model) == tokens.count_output_text(model, TEXT)


@pytest.mark.parametrize("model", ["gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-pro"])
def test_folded_text_is_counted_at_least_as_the_whole(model: str) -> None:
    text = TEXT * 20
    generated = GeneratedText(keep_chars=5000)
    for piece in pieces(text, 11):
        generated.append(piece)
    assert generated.folded
    assert len(generated.kept_text()) <= 5000 + 11
    whole = tokens.count_output_text(model, text)
    counted = generated.tokens_for(model)
    folds = len(text) // 5000
    assert whole.tokens <= counted.tokens <= whole.tokens + 2 * folds + 2
    if tokens.encoding_for_model(model) != "o200k_base":
        assert not counted.exact


def test_the_guard_count_follows_every_piece_and_the_recount_the_whole() -> None:
    generated = GeneratedText(keep_chars=3000)
    generated.append("before the guard. ")
    generated.guarded()
    for piece in pieces(TEXT, 13):
        generated.append(piece)
    whole = tokens.token_counter().count("o200k_base", "before the guard. " + TEXT)
    assert generated.running is not None
    assert generated.running >= whole  # piece by piece can only count more
    assert whole <= generated.recount() <= whole + 2 * (len(TEXT) // 3000) + 2


def test_many_small_pieces_are_joined_not_kept_apart() -> None:
    generated = GeneratedText()
    for _ in range(20_000):
        generated.append("ab")
    assert len(generated._pieces) <= 4097
    assert generated.kept_text() == "ab" * 20_000


@given(st.lists(st.text(max_size=40), max_size=60), st.integers(min_value=0, max_value=400))
@settings(max_examples=150, deadline=None)
def test_the_guard_counts_nothing_until_the_bytes_pass_its_limit(
    texts: list[str], limit: int
) -> None:
    """No ``o200k_base`` token is shorter than a byte: while a stream's text is at most
    ``limit`` bytes the guard makes no count (and loads no tokenizer); from then on it
    decides at every piece as a guard counting every piece from the start does."""
    generated = GeneratedText()
    guard = OutputGuard(limit, generated)
    eager = GeneratedText()
    eager.guarded()
    counter = tokens.token_counter()
    for i, text in enumerate(texts):
        generated.append(text)
        eager.append(text)
        sent = "".join(texts[: i + 1])
        assert generated.utf8_bytes == len(sent.encode("utf-8"))
        over = guard.over()
        assert eager.running is not None
        eager_over = eager.running > limit and counter.count("o200k_base", sent) > limit
        assert over == eager_over
        if generated.utf8_bytes <= limit:
            assert generated.running is None
        else:
            assert generated.running == eager.running
