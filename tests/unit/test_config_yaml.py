"""The config loader's YAML parsing (`spendgate.config.loader._parse_yaml`: libyaml, one
pass, plain documents constructed without PyYAML's generic constructor) gives exactly
what ``yaml.safe_load`` gives, for plain documents and for everything left to PyYAML
(aliases, merge keys, tagged collections, timestamps, YAML 1.1 booleans)."""

from __future__ import annotations

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate.config.yaml_text import parse_yaml as _parse_yaml
from spendgate.errors import ConfigError

DOCUMENTS = [
    "",
    "# only a comment\n",
    "a: 1\nb: [1, 2.5, -3, 0x1F, 1_000]\nc: {d: null, e: ~, f: yes, g: No, h: on}\n",
    "when: 2026-12-07\nat: 2026-12-07T10:00:00Z\nprice: '0.15'\nplain: 0.15\n",
    "budgets:\n  - name: a\n    limit_usd: 10\n    soft_thresholds: [0.5, 0.8]\n",
    "base: &base {period: daily, hard: true}\nteam: *base\nother: *base\n",
    "base: &base {period: daily}\nmerged:\n  <<: *base\n  limit_usd: 5\n",
    "set: !!set {a, b}\nomap: !!omap [{a: 1}, {b: 2}]\nbin: !!binary aGVsbG8=\n",
    'text: |\n  two\n  lines\nfolded: >\n  one\n  line\nquoted: "tab\\there"\n',
    "1: int key\n2.5: float key\nnull: null key\ntrue: bool key\n",
    "- a\n- [b, c]\n- {d: e}\n",
    "just a string\n",
    "anchored: &x hello\nagain: *x\n",
    "list: &l [1, 2]\nsame: *l\n",
]


@pytest.mark.parametrize("text", DOCUMENTS)
def test_documents_parse_as_safe_load_parses_them(text: str) -> None:
    assert _parse_yaml("x.yaml", text) == yaml.safe_load(text)


def test_an_unhashable_key_is_refused_as_pyyaml_refuses_it() -> None:
    with pytest.raises(yaml.YAMLError, match="unhashable"):
        _parse_yaml("x.yaml", "? [a, b]\n: c\n")


scalars = st.one_of(
    st.text(max_size=8),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(data=values, flow=st.booleans())
def test_dumped_data_reads_back_as_safe_load_reads_it(data: object, flow: bool) -> None:
    text = yaml.safe_dump(data, default_flow_style=flow)
    assert _parse_yaml("x.yaml", text) == yaml.safe_load(text)


@pytest.mark.parametrize(
    ("text", "where", "line", "first"),
    [
        ("a:\n  b: 1\n  b: 2\n", "a.b", 3, 2),  # a plain document: built from events
        ("x: &x 1\nlist:\n  - {c: *x, c: 2}\n", "list[0].c", 3, 3),  # an alias: from nodes
        ("base: &b {k: 1}\nm:\n  <<: *b\n  v: 1\n  v: 2\n", "m.v", 5, 4),  # a merge key
    ],
)
def test_a_duplicate_key_is_refused_with_its_path_and_lines(
    text: str, where: str, line: int, first: int
) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse_yaml("x.yaml", text)
    assert caught.value.key == where
    assert f"duplicate key at line {line} (first at line {first})" in str(caught.value)


# Plain scalars as people write them, each resolved by YAML 1.1's rules (PyYAML's):
# booleans, octal and sexagesimal integers, underscores, floats, nulls, timestamps, text
# that starts like a number. The loader resolves each distinct scalar once and reuses it,
# and takes a plain scalar whose first character no rule starts with for text: the same
# scalars repeated, plain and quoted, must read as ``safe_load`` reads each of them.
PLAIN = [
    "yes",
    "No",
    "ON",
    "off",
    "y",
    "n",
    "true",
    "False",
    "TRUE",
    "~",
    "null",
    "Null",
    "",
    "0777",
    "0o17",
    "0x1F",
    "0b101",
    "1_000",
    "-1_0",
    "+12",
    "190:20:30",
    "1:30",
    "1.5",
    "1e3",
    "1.0e+3",
    ".5",
    "-.inf",
    ".NaN",
    "6.8523015e+5",
    "685.230_15e+03",
    "2026-12-07",
    "2026-12-07T10:00:00Z",
    "2001-12-14 21:59:43.10 -5",
    "0.15",
    "007",
    "user-1",
    "user1",
    "monthly",
    "=",
    "<<x",
    "o",
    "Yes please",
    "1 000",
    "12abc",
    "-",
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(PLAIN), st.sampled_from(["plain", "single", "double"])),
        min_size=1,
        max_size=12,
    )
)
def test_plain_scalars_resolve_as_safe_load_resolves_them(items: list[tuple[str, str]]) -> None:
    def written(text: str, style: str) -> str:
        if style == "single" or (style == "plain" and text in ("", "-", "<<x", "=")):
            return "'" + text + "'"
        return '"' + text + '"' if style == "double" else text

    lines = [f"k{i}: {written(text, style)}" for i, (text, style) in enumerate(items)]
    lines += ["list:", *(f"  - {written(text, style)}" for text, style in items)]
    text = "\n".join(lines) + "\n"
    assert repr(_parse_yaml("x.yaml", text)) == repr(yaml.safe_load(text))
