"""Stored strings made safe to show, on a terminal and in a spreadsheet. No IO.

Names reach spendgate from operators (a key's name, user, service, team and tags; the
config's names) and come back in every report. A terminal obeys what it is sent: ESC
starts a command (clear the screen, set the window title, an OSC sequence left open
swallows what follows), a newline or carriage return draws a fake row, a BIDI override
shows the rest of the line reversed. A spreadsheet runs a cell that starts like a formula.

* `escape`: what a human-readable report prints instead of a stored string. Each unsafe
  character (C0 and C1 controls, DEL, line and paragraph separators, the BIDI controls,
  lone surrogates) becomes a Python-style escape (``\\n``, ``\\x1b``, ``\\u202e``), and a
  backslash is doubled, so the text reads unambiguously and decodes back exactly
  (``unicode_escape``).
* `unsafe_in`: the first unsafe character of a name, described, for the checks that refuse
  one at creation (key names, the config).
* `csv_cell`: a text cell a spreadsheet would read as a formula (it starts with ``=``,
  ``+``, ``-``, ``@``, a tab or a carriage return) gets a leading single quote, as the
  OWASP guidance on CSV injection says; its unsafe characters are escaped too (backslashes
  kept), so the export is safe to print and parses as one line per row (a lone carriage
  return is not quoted by Python's CSV writer).
"""

from __future__ import annotations

import re

# C0, DEL and C1 (Unicode category Cc); the BIDI controls (ALM, LRM, RLM, the embeddings
# and overrides, the isolates); line and paragraph separators; surrogates (unpaired ones
# cannot even be encoded for the terminal).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069\ud800-\udfff]"
)
_TO_ESCAPE = re.compile(rf"\\|{_UNSAFE.pattern}")
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
_SHORT = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: str, *, reversible: bool = True) -> str:
    """``text`` as a report shows it: no character a terminal would obey.

    ``reversible=False`` leaves backslashes as they are: for the program's own messages,
    whose quoted values are already Python reprs (``found character '\\t'``).
    """
    return (_TO_ESCAPE if reversible else _UNSAFE).sub(_escaped, text)


def unsafe_in(text: str) -> str | None:
    """The first character of ``text`` a report would have to escape, described
    (``"U+001B at position 3"``); None when there is none."""
    found = _UNSAFE.search(text)
    if found is None:
        return None
    return f"U+{ord(found.group()):04X} at position {found.start()}"


def csv_cell(text: str) -> str:
    """A text cell no spreadsheet runs as a formula (``=1+1`` -> ``'=1+1``) and no terminal
    obeys."""
    quote = "'" if text.startswith(_FORMULA_STARTS) else ""
    return quote + escape(text, reversible=False)


def plural(count: int, word: str) -> str:
    """``1 org``, ``3 orgs``: a count and its noun, for the sentences reports print."""
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"
