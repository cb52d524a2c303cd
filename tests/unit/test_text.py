"""What reports print of a stored string: nothing a terminal obeys, readable, and exactly
decodable; CSV text cells that no spreadsheet runs as a formula."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from spendgate.text import csv_cell, escape, unsafe_in
from terminal import BIDI_CONTROLS, obeyed_by_a_terminal


def decoded(shown: str) -> str:
    """Read an escaped string back the way Python reads its escapes."""
    return shown.encode("latin-1", "backslashreplace").decode("unicode_escape")


hostile = st.text(
    alphabet=st.one_of(
        st.characters(),  # everything, surrogates included
        st.sampled_from([*sorted(BIDI_CONTROLS), "\x1b", "\x9b", "\\", "\n", "\r", "\u2028"]),
    )
)


@settings(max_examples=500, deadline=None)
@given(hostile)
@example("\x1b[2J")
@example("\x1b]0;pwned")
@example("fake\nrow\r")
@example("evil\u202eexe.txt")
@example("\\x1b")  # the text of an escape is not the escape
def test_escaped_text_has_nothing_a_terminal_obeys_and_decodes_back(text: str) -> None:
    shown = escape(text)
    assert not [c for c in shown if obeyed_by_a_terminal(c)]
    assert decoded(shown) == text
    shown.encode("utf-8")  # printable on any UTF-8 terminal: no lone surrogate is left


@given(st.text(alphabet=st.characters(exclude_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_plain_names_are_shown_as_they_are(text: str) -> None:
    plain = "".join(c for c in text if c not in BIDI_CONTROLS and c != "\\")
    assert escape(plain) == plain


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("eve\x1b[2J", "eve\\x1b[2J"),
        ("\x1b]0;pwned", "\\x1b]0;pwned"),
        ("fake\nrow", "fake\\nrow"),
        ("cr\r\t", "cr\\r\\t"),
        ("abc\u202edef", "abc\\u202edef"),
        ("\x9b", "\\x9b"),
        ("CORP\\alice", "CORP\\\\alice"),
        ("zoë 山田", "zoë 山田"),
    ],
)
def test_escapes_read_like_python(text: str, shown: str) -> None:
    assert escape(text) == shown


@given(hostile)
def test_unsafe_in_finds_exactly_what_escape_would_change(text: str) -> None:
    found = unsafe_in(text)
    first = next((i for i, c in enumerate(text) if obeyed_by_a_terminal(c)), None)
    if first is None:
        assert found is None
    else:
        assert found == f"U+{ord(text[first]):04X} at position {first}"


@pytest.mark.parametrize(
    ("cell", "written"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1", "'+1"),
        ("-1", "'-1"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1", "'\\t=1"),
        ("\r=1", "'\\r=1"),
        ("team-a", "team-a"),
        ("a=b", "a=b"),
        ("CORP\\alice", "CORP\\alice"),
    ],
)
def test_formula_cells_are_quoted(cell: str, written: str) -> None:
    assert csv_cell(cell) == written


@given(hostile)
@example("'quoted")
def test_no_csv_cell_starts_like_a_formula_or_holds_a_control(text: str) -> None:
    cell = csv_cell(text)
    assert not cell.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert not [c for c in cell if obeyed_by_a_terminal(c)]
    formula = text.startswith(("=", "+", "-", "@", "\t", "\r"))
    assert cell == ("'" if formula else "") + escape(text, reversible=False)


@given(hostile)
def test_messages_keep_their_backslashes_and_lose_every_control(text: str) -> None:
    shown = escape(text, reversible=False)
    assert not [c for c in shown if obeyed_by_a_terminal(c)]
    assert shown.count("\\") >= text.count("\\")
    assert escape("found character '\\t'", reversible=False) == "found character '\\t'"


def test_every_character_a_report_escapes_is_one_repr_escapes() -> None:
    """The config loader looks for a backslash in the repr of a whole config before
    searching its text (`spendgate.config.loader._holds_unsafe`): that is exact only while
    every character `unsafe_in` finds is one that ``repr`` escapes (not printable)."""
    unsafe = [chr(code) for code in range(0x110000) if unsafe_in(chr(code)) is not None]
    assert len(unsafe) > 2000  # C0, C1, the BIDI controls, the surrogates
    assert all("\\" in repr(char) for char in unsafe)


def test_a_config_with_an_escaped_harmless_character_is_searched() -> None:
    from spendgate.config.loader import parse_config

    match = ["a\u00adb", "c\\d"]  # a soft hyphen (harmless, escaped by repr), a backslash
    config = parse_config(
        {
            "budgets": [
                {"name": f"b{i}", "scope": "user", "match": m, "limit_usd": 1}
                for i, m in enumerate(match)
            ]
        }
    )
    assert [budget.match for budget in config.budgets] == match
