"""What a terminal obeys, from the Unicode standard rather than from spendgate, so that
tests of escaped output check spendgate against an independent oracle."""

from __future__ import annotations

import unicodedata

# The Unicode property Bidi_Control.
BIDI_CONTROLS = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)


def obeyed_by_a_terminal(char: str) -> bool:
    """C0/C1 controls and DEL (Cc), surrogates, line/paragraph separators, BIDI controls."""
    return unicodedata.category(char) in {"Cc", "Cs", "Zl", "Zp"} or char in BIDI_CONTROLS


def safe_lines(output: str) -> list[str]:
    """The lines of ``output``, asserting that none holds a character a terminal obeys."""
    lines = output.removesuffix("\n").split("\n")
    for line in lines:
        obeyed = [char for char in line if obeyed_by_a_terminal(char)]
        assert not obeyed, f"{obeyed!r} reached the terminal in {line!r}"
    return lines
