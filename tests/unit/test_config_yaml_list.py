"""A long ``budgets:`` list read by its text (`spendgate.config.yaml_list`, then
`yaml_text.parse_long_list`): on generated configs, full of what YAML 1.1 and YAML 1.2
read differently and of what PyYAML's scanner treats specially, it gives exactly what the
whole document's reading gives (the same values, of the same types, in the same order),
or declines; and a broken list is refused with the whole reading's error."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from spendgate.config.loader import _parse_with_rows, load_config
from spendgate.config.yaml_text import parse_long_list, parse_whole, parse_yaml
from spendgate.errors import ConfigError

# what a value may be, written any way: YAML 1.1's booleans, nulls, octal, sexagesimal,
# underscores, floats and timestamps, YAML 1.2's spellings of them, indicators, quotes,
# comments, spaces, tabs, line breaks and characters libyaml refuses
TRAPS = [
    *("yes", "No", "ON", "off", "y", "n", "Y", "N", "true", "False", "TRUE", "yes!"),
    *("~", "null", "Null", "NULL", "nullx", "~x", ""),
    *("0777", "0o17", "0x1F", "0b101", "1_000", "-1_0", "+12", "007", "0", "-0", "12abc"),
    *("1:20", "190:20:30", "1:30:00", "-1:30", "1:", ":1"),
    *("1e3", "1.0e+3", "1.5", "1.", ".5", "+.5", "-.inf", ".inf", ".NaN", ".nan", "._"),
    *("6.8523015e+5", "685.230_15e+03", "0.15", "1_0.5"),
    *("2026-12-07", "2026-12-07T10:00:00Z", "2001-12-14 21:59:43.10 -5", "2026-13-45"),
    *("=", "<<", "<<x", "-", "--", "---", "...", "- a", "a - b", "-x", "?", "? x", "?x"),
    *("a: b", "a:b", "a:", "a #b", "a#b", "#a", "a ", " a", "a  b", "a\tb", "\t"),
    *("'", "''", "'a'", '"', "a'b", 'a"b', "\\", "\\n", "%x", "@x", "`x", "a`b"),
    *("&a", "*a", "!x", "!!str x", "|", ">", "a|b", "a>b", ",", "[a]", "{a: b}", "a,b"),
    *("user-1", "user1", "user 1", "monthly", "team", "gpt-4o-*", "a/b", "(x)", "$x"),
    *("é", "ünï code", "ø1", "💰", "\ufeff", "\x85", "a\u2028b", "\x07", "\xa0x", "a\x85b"),
    *("a[b", "a]b", "a{b", "a}b", "a\\b", "a\x7fb", "a\x9fb", "a\rb", "a\u2029", "x\ud7ffy"),
]
KEYS = ["name", "scope", "match", "limit_usd", "period", "yes", "on", "null", "1", "a_b"]
PREFIXES = [
    "",
    "a: 1\n",
    "# a comment\n",
    "server:\n  log_level: warning\n",
    "base: &b {x: 1}\nuse: *b\n",
    "base: &b {x: 1}\n<<: *b\n",
    "<<: {budgets: [1]}\n",
    "%YAML 1.1\n---\n",
    "---\n",
    "budgets: []\n",
    "text: |\n  budgets:\n  - name: x\n",
    'q: "multi\n',
    "{a: 1,\n",
    "--- &root\n",
    "--- !!map\n",
    "- item\n",
    "tags: [a, b]\nflow: {c: yes, d: 0777}\n",
    "\ufeffa: 1\n",
]
SUFFIXES = [
    "",
    "models: {}\n",
    "\n\n# the end\nmodels: x\n",
    "# c\n- more: x\n",
    "  indented: x\n",
    "- extra\n",
    "...\n",
    "---\nb: 2\n",
    "\tx: 1\n",
    'end: "q"\n',
    "self: *root\n",
    "sub:\n  <<: *root\n",
    "budgets: []\n",
    "x: 1",
    "x\n",
    "#c\r- a: 1\n",
    '"k": 1\n',
    "? k\n: v\n",
    "k: |\n  text\n\n",
    "k: >-\n budgets:\n - x\n",
]
# what a config usually holds around the list
PLAIN_PREFIXES = ["", "a: 1\n", "server:\n  log_level: warning\n", "base: &b {x: 1}\n<<: *b\n"]
PLAIN_SUFFIXES = ["", "models: {}\n", "\n# the models\nmodels:\n  m: {provider: p}\n"]
# a line slipped into the list
ODD_LINES = [
    "",
    "# comment",
    "  # indented comment",
    "    - nested",
    "  key:value",
    "  key: ",
    "  key:",
    "\tkey: x",
    "  key: x  ",
    "  key: x # comment",
    "  key: &a x",
    "  key: *a",
    "  key: !!str 1",
    "  key: [a, b]",
    "  key: |",
    "   more",
    "-",
    "- key: x",
    "  name: again",
    "  <<: {k: 1}",
    "  ? x",
]


def written(text: str, style: str) -> str:
    if style == "single":
        return "'" + text.replace("'", "''") + "'"
    if style == "double":
        return '"' + text + '"'
    return text


def typed(data: Any) -> str:
    """The data with every value's type: ``repr`` tells 1 from 1.0, True and '1'."""
    return repr(data)


REFUSALS = (yaml.YAMLError, ConfigError, ValueError)


def whole(text: str) -> tuple[str, Any]:
    try:
        return "read", parse_whole("x.yaml", text)
    except REFUSALS as exc:
        return "refused", type(exc)


entry_values = st.tuples(
    st.one_of(
        st.sampled_from(TRAPS), *[st.sampled_from(["user-1", "u 2", "team", "10", "2.5"])] * 4
    ),
    st.sampled_from(["plain", "single", "double"]),
)


@st.composite
def documents(draw: st.DrawFn) -> str:
    names = st.sampled_from(KEYS) | st.sampled_from(KEYS[:5])
    keys = draw(st.lists(names, min_size=1, max_size=4, unique=True))
    count = draw(st.integers(1, 5))
    indent = " " * draw(st.sampled_from([0, 0, 2, 3]))
    lines = []
    for _ in range(count):
        for place, key in enumerate(keys):
            value = written(*draw(entry_values))
            lead = indent + ("- " if place == 0 else "  ")
            lines.append(f"{lead}{key}: {value}")
    if draw(st.integers(0, 3)) == 0:
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, indent + draw(st.sampled_from(ODD_LINES)))
    header = draw(st.sampled_from(["budgets:"] * 4 + ["budgets:  ", "budgets: # c", "budgets: []"]))
    prefix = draw(st.sampled_from(PREFIXES if draw(st.booleans()) else PLAIN_PREFIXES))
    suffix = draw(st.sampled_from(SUFFIXES if draw(st.booleans()) else PLAIN_SUFFIXES))
    return prefix + header + "\n" + "".join(line + "\n" for line in lines) + suffix


@st.composite
def plain_documents(draw: st.DrawFn) -> str:
    """Lists the fast route takes, but for their values: every trap, each way."""
    keys = draw(st.lists(st.sampled_from(KEYS[:5]), min_size=1, max_size=5, unique=True))
    lines = []
    for _ in range(draw(st.integers(1, 4))):
        for place, key in enumerate(keys):
            lines.append(("- " if place == 0 else "  ") + f"{key}: {written(*draw(entry_values))}")
    return "a: 1\nbudgets:\n" + "".join(line + "\n" for line in lines) + "models: {}\n"


def check(text: str) -> bool:
    """The fast route's reading is the whole one's, or it declines. True where taken."""
    fast = parse_long_list("x.yaml", text)
    if fast is None:
        return False
    outcome, expected = whole(text)
    assert outcome == "read", text
    assert typed(fast) == typed(expected), text
    # and the pure-Python parser, YAML 1.1 as PyYAML defines it, reads it the same
    assert typed(fast) == typed(yaml.load(text, Loader=yaml.SafeLoader)), text
    return True


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_generated_configs_read_as_the_whole_document_reads_or_decline(text: str) -> None:
    event("taken" if check(text) else "declined")


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain_documents())
def test_each_trap_scalar_reads_as_pyyaml_reads_it_or_declines(text: str) -> None:
    event("taken" if check(text) else "declined")


@pytest.mark.parametrize("text", TRAPS)
@pytest.mark.parametrize("style", ["plain", "single", "double"])
def test_every_trap_in_every_style(text: str, style: str) -> None:
    document = f"budgets:\n- name: n\n  limit_usd: {written(text, style)}\n- name: m\n"
    document += f"  limit_usd: {written(text, style)}\nmodels: {{}}\n"
    check(document)


TAKEN = [
    # as yaml.safe_dump writes the many-budgets benchmark's list
    "server:\n  log_level: warning\nbudgets:\n- name: user-0\n  scope: user\n  match: user0\n"
    "  limit_usd: '1000'\n  period: monthly\n- name: user-1\n  scope: user\n  match: user1\n"
    "  limit_usd: '1001'\n  period: monthly\n",
    # indented, numbers, booleans, nulls, dates, quoted, comments and blank lines after it
    "budgets:\n  - name: a b\n    limit_usd: 10.5\n    hard: yes\n    note: ~\n"
    '  - name: "c"\n    limit_usd: 0777\n    hard: Off\n    note: 2026-12-07\n'
    "\n# the models\nmodels:\n  x: {provider: p}\n",
    # anchors and merge keys elsewhere in the document
    "base: &b {period: daily}\nteam:\n  <<: *b\nbudgets:\n- name: x\n  limit_usd: 1:30\n"
    "other: *b\n",
    "budgets:\n- name: only\n",
]


def taken_as(style: str) -> list[str]:
    """The traps the route takes written in ``style``."""
    document = "budgets:\n- name: n\n  limit_usd: {}\nmodels: {{}}\n"
    return [
        text
        for text in TRAPS
        if parse_long_list("x.yaml", document.format(written(text, style))) is not None
    ]


def test_a_long_list_in_a_config_reads_as_the_whole_document_reads() -> None:
    """A config long enough for `parse_yaml` to take the route (64 KiB), the traps it
    takes in it, plain and quoted."""
    plain, single, double = taken_as("plain"), taken_as("single"), taken_as("double")
    assert {"yes", "0777", "1:20", ".inf", "~", "2026-12-07"} <= set(plain)
    lines = ["server:\n  port: 1\nbudgets:\n"]
    for i in range(2_000):
        lines.append(f"- name: user-{i}\n  match: {plain[i % len(plain)]}\n")
        lines.append(f"  limit_usd: {written(single[i % len(single)], 'single')}\n")
        lines.append(f"  period: {written(double[i % len(double)], 'double')}\n")
    text = "".join(lines) + "models: {}\n"
    assert len(text) > 64 * 1024
    assert check(text)
    assert typed(parse_yaml("x.yaml", text)) == typed(parse_whole("x.yaml", text))


@pytest.mark.parametrize("text", TAKEN)
def test_lists_written_as_tools_write_them_are_taken(text: str) -> None:
    assert check(text)
    assert typed(parse_yaml("x.yaml", text)) == typed(parse_whole("x.yaml", text))


DECLINED = [
    "budgets:\n- name: a\n  # a comment\n  scope: user\n",  # a comment inside
    "budgets:\n- name: a\n\n- name: b\n",  # a blank line inside
    "budgets:\n- name: &n a\n- name: *n\n",  # an anchor, an alias
    "budgets:\n- name: a\n  models: [x]\n",  # a nested list
    "budgets:\n- name: a\n- name: b\n  scope: team\n",  # entries with different keys
    "budgets:\n- name: a\n  name: b\n",  # a key given twice
    "budgets:\n- <<: {scope: user}\n  name: a\n",  # a merge key
    "--- &r\nbudgets:\n- name: a\nsub:\n  <<: *r\n",  # the top mapping merged inside it
    "budgets:\n- name: a\n  limit_usd: =\n",  # the value key
    "budgets:\n- name: a # comment\n",  # a comment after a value
    "budgets:\n- name: a",  # no line break at the end
]


@pytest.mark.parametrize("text", DECLINED)
def test_what_the_route_does_not_take_is_read_whole(text: str) -> None:
    assert parse_long_list("x.yaml", text) is None


@pytest.mark.parametrize(
    ("text", "where", "line", "first"),
    [
        ("budgets:\n- name: a\n  name: b\n", "budgets[0].name", 3, 2),
        ("budgets:\n- name: a\nmodels: {}\nbudgets:\n- name: b\n", "budgets", 4, 1),
        ("budgets:\n- name: a\nmodels: {}\nmodels: {}\n", "models", 4, 3),
    ],
)
def test_a_duplicate_key_is_refused_as_before(text: str, where: str, line: int, first: int) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml("x.yaml", text)
    assert caught.value.key == where
    assert f"duplicate key at line {line} (first at line {first})" in str(caught.value)


@pytest.mark.parametrize(
    "text",
    [
        "budgets:\n- name: a\n  scope: [user\nmodels: {}\n",
        "budgets:\n- name: a\n  scope: user\nmodels: {a: [}\n",
        "budgets:\n- name: a\n\tscope: user\n",
        "budgets:\n- name: a\n  scope: '\n",
        "budgets:\n- name: a\n  when: 2026-13-45\n",
    ],
)
def test_a_broken_document_is_refused_with_the_whole_readings_error(text: str) -> None:
    with pytest.raises(REFUSALS) as fast:
        parse_yaml("x.yaml", text)
    with pytest.raises(REFUSALS) as slow:
        parse_whole("x.yaml", text)
    assert type(fast.value) is type(slow.value)
    assert str(fast.value) == str(slow.value)


# `load_config` validates a list that came by columns as it came, without a mapping per
# entry: the same config as validating the mappings PyYAML gives, the same errors.
def long_config(entry: Callable[[int], str], tail: str = "") -> str:
    head = "storage:\n  url: 'sqlite:///:memory:'\nbudgets:\n"
    return head + "".join(entry(i) for i in range(1_500)) + tail


def user_budget(i: int) -> str:
    return f"- name: user-{i}\n  scope: user\n  match: u{i}\n  limit_usd: '{10 + i % 7}'\n"


def loaded_whole(path: Path) -> Any:
    text = path.read_text()
    return _parse_with_rows(parse_whole(str(path), text), str(path), path.parent)


@pytest.mark.parametrize(
    "text",
    [
        long_config(user_budget),
        long_config(lambda i: user_budget(i) + f"  hard: {'yes' if i % 2 else 'off'}\n"),
        long_config(lambda i: user_budget(i) + "  period: daily\n", "models: {}\n"),
    ],
)
def test_a_long_list_loads_as_its_mappings_load(text: str, tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    path.write_text(text)
    assert parse_long_list(str(path), text) is not None
    assert repr(load_config(path)) == repr(loaded_whole(path))


@pytest.mark.parametrize(
    "text",
    [
        long_config(lambda i: user_budget(i).replace("scope: user", "scope: nobody", i == 900)),
        long_config(lambda i: user_budget(i).replace(f"user-{i}", "user-3", i == 1200)),
        long_config(lambda i: user_budget(i) + f"  limit_tokens: {i}\n"),
        long_config(user_budget, "unknown_key: 1\n"),
        long_config(lambda i: user_budget(i).replace("u1\n", "u\u202e1\n", i == 1)),
        long_config(lambda i: user_budget(i) + "  share: '0.5'\n"),
    ],
)
def test_a_long_list_is_refused_as_its_mappings_are(text: str, tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as columns:
        load_config(path)
    with pytest.raises(ConfigError) as mappings:
        loaded_whole(path)
    assert str(columns.value) == str(mappings.value)


def test_a_long_list_beside_a_budgets_file_loads_as_before(tmp_path: Path) -> None:
    (tmp_path / "more.csv").write_text("name,scope,match,limit_usd\nfile-1,user,f1,5\n")
    path = tmp_path / "spendgate.yaml"
    path.write_text(long_config(user_budget, "budgets_file: more.csv\n"))
    config = load_config(path)
    assert repr(config) == repr(loaded_whole(path))
    assert [spec.name for spec in config.budgets][-2:] == ["user-1499", "file-1"]
