"""A cheap upper bound on a request body's input tokens, for pricing a large body before
(and, when it fits, instead of) counting it.

Every token of a byte-level BPE (``o200k_base``, ``cl100k_base``) stands for at least one
byte of UTF-8, so a text has at most as many tokens as bytes. `ByteBound` is a counter that
counts each text as its bytes: a body walked with it (`counting_with`) gets, for an OpenAI
encoding, at most one token per byte of its texts, and for every other model the documented
estimate (`spendgate.domain.tokens`: 1.75 x the ``o200k_base`` count, at least bytes / 4)
taken with bytes in place of that count; media, tools and message overheads are counted as
by the real counter. So the bound is never below the count the body would get, and costs a
length per text instead of a tokenizer run (a 100 KB prompt: microseconds, not
milliseconds). It over-reserves a text's input about four times: the admission path takes
it only when that still fits every budget unclamped (`spendgate.pipeline.budgeting`).
"""

from __future__ import annotations

from contextvars import Token

from spendgate.domain.tokens import BODY_COUNTER, EncodingName, TokenCounter
from spendgate.domain.utf8 import utf8_length


class ByteBound(TokenCounter):
    """Counts a text as its UTF-8 bytes (`utf8_length`): loads no encoding."""

    def count(self, encoding: EncodingName, text: str) -> int:
        return utf8_length(text)


BYTE_BOUND = ByteBound()


class _CountingWith:
    """A plain context manager: a generator's (`contextlib.contextmanager`) costs a
    microsecond more, and admission enters this one on every request (`BodyWork`)."""

    __slots__ = ("_counter", "_token")
    _token: Token[TokenCounter | None]

    def __init__(self, counter: TokenCounter) -> None:
        self._counter = counter

    def __enter__(self) -> None:
        self._token = BODY_COUNTER.set(self._counter)

    def __exit__(self, *exc: object) -> None:
        BODY_COUNTER.reset(self._token)


def counting_with(counter: TokenCounter) -> _CountingWith:
    """Request bodies are counted with ``counter`` inside the block (this task only)."""
    return _CountingWith(counter)
