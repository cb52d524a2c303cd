"""Long lists of budgets are validated column by column (`specs_from_columns`: each
distinct value of a key once), in YAML and in a ``budgets_file``. Where that way accepts a
list, it gives exactly the budgets that validating each entry gives (the same values, of
the same types, written the same); where any entry would be refused it declines, and the
entries are validated one by one, so every error names the entry (the file's line and
column) as before."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from spendgate.config.budget_file import read_budget_rows, read_budget_specs
from spendgate.config.budgets import (
    MISSING,
    BudgetConfig,
    BudgetSpec,
    _specs_from_entries,
    budgets_by_columns,
    listed_budgets,
    specs_from_columns,
)
from spendgate.config.loader import load_config, parse_config
from spendgate.errors import ConfigError


def written(specs: Any) -> list[list[str]]:
    """Each budget's values as written (the type and the digits: Decimal('1.0') is not
    Decimal('1.00'), nor 'user' BudgetScope.USER)."""
    return [[repr(value) for value in spec] for spec in specs]


def one_by_one(entries: Any) -> tuple[str, Any]:
    """What validating entry by entry gives (pydantic's core, else the models)."""
    try:
        return "accepted", written(listed_budgets(entries))
    except ValidationError:
        return "refused", None


# small pools, so that a list repeats its values as long lists do
VALUES: dict[str, list[Any]] = {
    "name": ["a", "b-1", "user.7", "", "-x", "a b", 5, None],
    "scope": ["user", "team", "key", "USER", "nobody", 1],
    "match": ["*", "u1", "u2", "", 3, None],
    "models": [["gpt-*"], [], ["a", "b"], "gpt-4o", [1], ("x",), [["a"]], ["a\x1b"]],
    "limit_usd": [
        "10",
        "10.50",
        "0",
        "-1",
        " 12 ",
        "1e3",
        "1_000",
        "NaN",
        "abc",
        5,
        0,
        True,
        12.5,
        0.1,
        5.0,
        0.0,
        -0.0,
        float("nan"),
        float("inf"),
        -2.5,
    ],
    "limit_tokens": [100, 0, -1, "100", "1e3", True, None, 100.0, 1.5],
    "share_of": ["a", "b-1", "", None, 2],
    "share": ["0.5", "0", "1", "2", 1, 0.25, 0.5, 1.0, -0.0, float("nan")],
    "period": ["monthly", "daily", "rolling:5h", "rolling:0h", "yearly", 1],
    "hard": [True, False, "false", "yes", "nope", 0, 1, None],
    "soft_thresholds": [["0.5", "0.9"], ["1"], [], "0.5", [0.5]],
    "hidden_input": ["bound", "refuse", "estimate", "BOUND", None],
    "limit": [1],  # no budget's key
}


@st.composite
def entries(draw: st.DrawFn) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": draw(st.sampled_from(["a", "b", "c-1"])), "scope": "user"}
    entry["limit_usd" if draw(st.booleans()) else "limit_tokens"] = draw(st.sampled_from([5, 7]))
    for key in draw(st.lists(st.sampled_from(sorted(VALUES)), max_size=3, unique=True)):
        entry[key] = draw(st.sampled_from(VALUES[key]))
    for key in draw(st.lists(st.sampled_from(["name", "scope", "limit_usd"]), max_size=1)):
        entry.pop(key, None)
    return entry


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(entries(), min_size=1, max_size=8))
def test_columns_give_what_each_entry_gives(value: list[dict[str, Any]]) -> None:
    by_columns = _specs_from_entries(value)
    expected = one_by_one(value)
    if by_columns is not None:
        assert expected == ("accepted", written(by_columns))
    assert one_by_one(value) == expected  # and the list validates as before


def test_a_long_plain_list_is_taken_by_columns() -> None:
    value = [
        {"name": f"u{i}", "scope": "user", "match": f"user{i}", "limit_usd": f"{10 + i % 7}"}
        for i in range(1000)
    ]
    by_columns = _specs_from_entries(value)
    assert by_columns is not None
    assert written(by_columns) == one_by_one(value)[1]
    assert by_columns[3] == BudgetSpec.of(BudgetConfig.model_validate(value[3]))


@pytest.mark.parametrize(
    ("columns", "why"),
    [
        ({"name": ["a", "b"], "scope": ["user", "user"]}, "no limit: a problem of the pair"),
        ({"name": ["a", MISSING], "scope": ["user"] * 2, "limit_tokens": [1, 2]}, "no name"),
        ({"name": ["a"], "scope": ["user"], "limit_usd": [float("nan")]}, "NaN"),
        ({"name": ["a"], "scope": ["user"], "limit_usd": [-0.0]}, "negative zero"),
        ({"name": ["a", "b"], "scope": ["user"] * 2, "limit_usd": [1, 1.0]}, "1 and 1.0"),
        ({"name": ["a", "b"], "scope": ["user"] * 2, "hard": [True, 1], "limit_tokens": [1] * 2},
         "1 and True"),
        ({"name": ["a"], "scope": ["user"], "limit_tokens": [1], "limit": [1]}, "unknown key"),
        ({"name": ["a"], "scope": ["user"], "limit_tokens": [1, 2]}, "a short column"),
    ],
)  # fmt: skip
def test_columns_decline_what_they_do_not_take(columns: dict[str, list[Any]], why: str) -> None:
    assert specs_from_columns(columns, len(columns["name"])) is None, why


CELLS: dict[str, list[str]] = {
    "name": ["a", "b-1", "user.7", "", "-x", "a b"],
    "scope": ["user", "team", "USER", ""],
    "match": ["*", "u1", "", " "],
    "models": ["gpt-*", "", "a b", "  "],
    "limit_usd": ["10", "10.50", "", "-1", " 12 ", "1e3", "1_000", "NaN", "abc"],
    "limit_tokens": ["100", "", "0", "1e3", "1.0"],
    "share_of": ["a", "", "b-1"],
    "share": ["0.5", "", "2"],
    "period": ["monthly", "", "rolling:5h", "yearly"],
    "hard": ["true", "false", "", "yes", "0", "nope"],
    "soft_thresholds": ["0.5 0.9", "", "1", "0.5"],
    "hidden_input": ["bound", "", "estimate", "refuse"],
}


@st.composite
def tables(draw: st.DrawFn) -> tuple[list[str], list[list[str]]]:
    header = ["name", "scope", "limit_usd"]
    header += draw(st.lists(st.sampled_from(sorted(CELLS)), max_size=3, unique=True))
    header = list(dict.fromkeys(header))
    size = draw(st.integers(1, 8))
    rows = [
        [draw(st.sampled_from(CELLS[column][:2] if column == "limit_usd" else CELLS[column]))
         for column in header]
        for _ in range(size)
    ]  # fmt: skip
    return header, rows


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_a_file_read_by_columns_gives_what_its_rows_give(
    tmp_path_factory: pytest.TempPathFactory, table: tuple[list[str], list[list[str]]]
) -> None:
    path = tmp_path_factory.mktemp("csv") / "budgets.csv"
    with path.open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([table[0], *table[1]])
    by_columns = read_budget_specs(path)
    expected = one_by_one(read_budget_rows(path).rows)
    if by_columns is not None:
        assert expected == ("accepted", written(by_columns))


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ("u700,user,user700,-5", "line 702: limit_usd must not be negative"),
        ("-x,user,user700,5", "line 702, column name: '-x' is not a name: a letter or digit, "
         "then letters, digits and _ . : / @ + - (no spaces)"),
        ('u700,user,"us\u202eer",5', "line 702, column match: contains a control or BIDI "
         "character (U+202E at position 2); names and values must be plain text"),
    ],
)  # fmt: skip
def test_a_long_file_with_a_bad_row_is_named_by_its_line_and_column(
    tmp_path: Path, row: str, problem: str
) -> None:
    lines = [f"u{i},user,user{i},{10 + i % 3}" for i in range(1000)]
    lines[700] = row
    (tmp_path / "b.csv").write_text("name,scope,match,limit_usd\n" + "\n".join(lines) + "\n")
    (tmp_path / "c.yaml").write_text("budgets_file: b.csv\n")
    assert read_budget_specs(tmp_path / "b.csv") is None
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert str(caught.value) == f"{tmp_path / 'b.csv'}: {problem}"


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ('u2,user,"user\x1b7",10', "line 3, column match: contains a control or BIDI character "
         "(U+001B at position 4); names and values must be plain text"),
        ("u2,USER,user2,10", "line 3, column scope: Input should be 'org', 'team', 'service', "
         "'user', 'key', 'tag', 'session' or 'model'"),
        ("u2,user,user2,", "line 3: give exactly one of limit_usd, limit_tokens or share_of"),
    ],
)  # fmt: skip
def test_a_row_refused_is_named_by_its_line_and_column(
    tmp_path: Path, row: str, problem: str
) -> None:
    (tmp_path / "b.csv").write_text(f"name,scope,match,limit_usd\nu1,user,user1,10\n{row}\n")
    (tmp_path / "c.yaml").write_text(
        "budgets: [{name: t, scope: team, limit_usd: 5}]\nbudgets_file: b.csv\n"
    )
    assert read_budget_specs(tmp_path / "b.csv") is None
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert str(caught.value) == f"{tmp_path / 'b.csv'}: {problem}"


def test_a_row_named_twice_across_yaml_and_file_is_named_by_its_line(tmp_path: Path) -> None:
    (tmp_path / "b.csv").write_text("name,scope,match,limit_usd\nu1,user,user1,10\nt,user,x,1\n")
    (tmp_path / "c.yaml").write_text(
        "budgets: [{name: t, scope: team, limit_usd: 5}]\nbudgets_file: b.csv\n"
    )
    assert read_budget_specs(tmp_path / "b.csv") is not None  # each row fine on its own
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "c.yaml")
    assert "line 3, column name" in str(caught.value)
    assert "duplicate name 't'" in str(caught.value)


def _long_list(count: int = 1000) -> list[dict[str, Any]]:
    return [
        {"name": f"u{i}", "scope": "user", "match": f"user{i}", "limit_usd": f"{10 + i % 3}"}
        for i in range(count)
    ]


@pytest.mark.parametrize(
    ("key", "value", "problem"),
    [
        ("match", "user\x1b", "budgets[700].match: contains a control or BIDI character "
         "(U+001B at position 4); names and values must be plain text"),
        ("scope", "USER", "budgets[700].scope: Input should be 'org', 'team', 'service', "
         "'user', 'key', 'tag', 'session' or 'model'"),
        ("limit_usd", "-5", "budgets[700]: limit_usd must not be negative"),
        ("name", "-bad", "budgets[700].name: '-bad' is not a name: a letter or digit, then "
         "letters, digits and _ . : / @ + - (no spaces)"),
        ("match", "", "budgets[700].match: String should have at least 1 character"),
        ("name", 5, "budgets[700].name: Input should be a valid string"),
        ("name", "u3", "budgets[700].name: duplicate name 'u3', already used by "
         "budgets[3].name (budget and limit names share one namespace)"),
    ],
)  # fmt: skip
def test_a_long_yaml_list_names_the_entry_refused(key: str, value: object, problem: str) -> None:
    """Its names and members are validated whole (mostly distinct), the rest by value."""
    budgets = _long_list()
    budgets[700] = {**budgets[700], key: value}
    with pytest.raises(ConfigError) as caught:
        parse_config({"budgets": budgets}, "c.yaml")
    assert str(caught.value) == f"c.yaml: {problem}"


def test_control_characters_beside_a_long_list_are_named() -> None:
    data = {"budgets": _long_list(), "orgs": {"acme": {"teams": ["m\x1bl"]}}}
    assert budgets_by_columns(data["budgets"]) is not None
    with pytest.raises(ConfigError) as caught:
        parse_config(data, "c.yaml")
    assert str(caught.value) == (
        "c.yaml: orgs.acme.teams[0]: contains a control or BIDI character (U+001B at "
        "position 1); names and values must be plain text"
    )
    assert len(parse_config({"budgets": _long_list()}).budgets) == 1000
