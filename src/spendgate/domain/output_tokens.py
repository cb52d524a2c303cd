"""The text a stream has generated, kept in bounded memory.

A stream meter needs the generated text for two things: the output guard's running count
(a budgeted stream must not outrun its reserved ceiling) and, when the provider never
reports usage, an estimate of the output tokens. Neither needs the text itself once it is
counted, and a provider stream that never ends must not grow the gateway's memory. So the
last `KEEP_CHARS` characters are kept as they came, and older text is folded into counts:
its ``o200k_base`` tokens and its UTF-8 bytes, from which `tokens_for` rebuilds the
estimate (exact for models counted with ``o200k_base``; for the others the same upper
bound as `spendgate.domain.tokens.TokenCounter.upper_bound`, taken chunk by chunk, which
can only round up). Ordinary answers (well under a megabyte) are never folded, so they
cost nothing extra."""

from __future__ import annotations

from spendgate.domain import tokens
from spendgate.domain.tokens import EncodingName, TokenCount
from spendgate.domain.utf8 import utf8_length

KEEP_CHARS = 1 << 20  # text kept verbatim; beyond it, older text is folded into counts
KEEP_PIECES = 4096  # pieces kept apart; beyond it they are joined into one (each costs ~60 B)
GUARD_ENCODING: EncodingName = "o200k_base"


class GeneratedText:
    """Pieces of generated text as they arrive; counts of what was folded away."""

    __slots__ = (
        "_chars",
        "_folded_bytes",
        "_folded_tokens",
        "_keep",
        "_pieces",
        "running",
        "utf8_bytes",
    )

    def __init__(self, keep_chars: int = KEEP_CHARS) -> None:
        self._pieces: list[str] = []
        self._chars = 0
        self._keep = keep_chars
        self._folded_tokens = 0  # o200k_base tokens of the text folded away
        self._folded_bytes = 0
        self.running: int | None = None  # o200k tokens counted piece by piece (`guarded`)
        # UTF-8 bytes of everything generated: a byte-level BPE counts no more tokens than
        # that, so a guard need not count until these pass its limit.
        self.utf8_bytes = 0

    def guarded(self) -> None:
        """Count every piece as it arrives (for the output guard)."""
        if self.running is None:
            counter = tokens.token_counter()
            self.running = sum(counter.count(GUARD_ENCODING, piece) for piece in self._pieces)
            self.running += self._folded_tokens

    def append(self, piece: str) -> None:
        if not piece:
            return
        if self.running is not None:
            self.running += tokens.token_counter().count(GUARD_ENCODING, piece)
        self.utf8_bytes += utf8_length(piece)
        self._pieces.append(piece)
        self._chars += len(piece)
        if self._chars > self._keep:
            self._fold()
        elif len(self._pieces) > KEEP_PIECES:
            self._pieces[:] = ["".join(self._pieces)]

    def _fold(self) -> None:
        text = "".join(self._pieces)
        self._folded_tokens += tokens.token_counter().count(GUARD_ENCODING, text)
        self._folded_bytes += utf8_length(text)
        self._pieces.clear()
        self._chars = 0

    def recount(self) -> int:
        """The ``o200k_base`` tokens of everything generated, counted as a whole where the
        text is still kept (the guard confirms with this before it cuts)."""
        kept = "".join(self._pieces)
        return self._folded_tokens + tokens.token_counter().count(GUARD_ENCODING, kept)

    def tokens_for(self, model: str) -> TokenCount:
        """The output tokens of everything generated, as ``model`` counts them (exact, or
        an upper bound: `spendgate.domain.tokens.count_output_text`)."""
        kept = "".join(self._pieces)
        count = tokens.count_output_text(model, kept) if kept else TokenCount(0, exact=True)
        if not self._folded_bytes:
            return count
        if tokens.encoding_for_model(model) == GUARD_ENCODING:
            return TokenCount(count.tokens + self._folded_tokens, exact=count.exact)
        bound = tokens.bound_from_counts(self._folded_tokens, self._folded_bytes)
        return TokenCount(count.tokens + bound, exact=False)

    def kept_text(self) -> str:
        """The text still kept (all of it unless the stream passed `KEEP_CHARS`)."""
        return "".join(self._pieces)

    @property
    def folded(self) -> bool:
        return self._folded_bytes > 0
