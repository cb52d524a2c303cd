"""``budgets_file``: budgets one a CSV row, listed after ``budgets:``; what the YAML would
give for the same entries, and every problem named by the file, its line and column."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from spendgate.config.build import build_budget_book
from spendgate.config.loader import load_config
from spendgate.errors import ConfigError

ROWS = [
    {"name": "u1", "scope": "user", "match": "alice", "limit_usd": "12.50"},
    {"name": "u2", "scope": "user", "match": "bob", "limit_tokens": 5000, "period": "daily"},
    {
        "name": "opus",
        "scope": "team",
        "match": "ml",
        "models": ["claude-opus-*", "o3*"],
        "limit_usd": "3",
        "hard": False,
        "soft_thresholds": ["0.5", "0.9"],
    },
    {"name": "half", "scope": "user", "match": "carol", "share_of": "team", "share": "0.5"},
]
YAML_BUDGETS = [{"name": "team", "scope": "team", "match": "ml", "limit_usd": "100"}]
HEADER = "name,scope,match,models,limit_usd,limit_tokens,share_of,share,period,hard,soft_thresholds"
LINES = [
    "u1,user,alice,,12.50,,,,,,",
    "u2,user,bob,,,5000,,,daily,,",
    "",  # a blank line is skipped
    'opus,team,ml,"claude-opus-* o3*",3,,,,,false,0.5 0.9',
    "half,user,carol,,,,team,0.5,,,",
]


def write(folder: Path, lines: list[str], header: str = HEADER) -> Path:
    (folder / "people.csv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    config = folder / "spendgate.yaml"
    data = {"budgets": YAML_BUDGETS, "budgets_file": "people.csv"}
    config.write_text(yaml.safe_dump(data), encoding="utf-8")
    return config


def test_rows_are_the_budgets_the_yaml_would_list(tmp_path: Path) -> None:
    from_file = load_config(write(tmp_path, LINES))
    listed = tmp_path / "listed.yaml"
    listed.write_text(yaml.safe_dump({"budgets": [*YAML_BUDGETS, *ROWS]}), encoding="utf-8")
    from_yaml = load_config(listed)
    assert from_file.budgets == from_yaml.budgets
    assert build_budget_book(from_file).budgets == build_budget_book(from_yaml).budgets
    assert from_file.budgets_file == "people.csv"


def test_a_spreadsheet_export_with_a_byte_order_mark_reads(tmp_path: Path) -> None:
    path = write(tmp_path, LINES[:1])
    csv_file = tmp_path / "people.csv"
    csv_file.write_text("\ufeff" + csv_file.read_text(encoding="utf-8"), encoding="utf-8")
    assert [b.name for b in load_config(path).budgets] == ["team", "u1"]


@pytest.mark.parametrize(
    ("lines", "header", "key", "problem"),
    [
        (["u1,user,alice,,ten,,,,,,"], HEADER, "line 2, column limit_usd", "Input should be"),
        (
            [*LINES[:2], "", "u3,user,x,,1,,,,yearly,,"],
            HEADER,
            "line 5, column period",
            "'yearly' is not a period: hourly, daily, weekly, monthly, lifetime or "
            "rolling:<N>m|h|d (rolling:30m, rolling:24h, rolling:7d)",
        ),
        (
            ["u1,user,alice,,1,,,,,,", "u1,user,bob,,1,,,,,,"],
            HEADER,
            "line 3, column name",
            "duplicate name 'u1', already used by {csv} line 2, column name",
        ),
        (
            ["team,user,alice,,1,,,,,,"],
            HEADER,
            "line 2, column name",
            "duplicate name 'team', already used by budgets[0].name",
        ),
        (["u1,user,alice,,1,5,,,,,"], HEADER, "line 2", "give exactly one of limit_usd"),
        (["u1,user,alice,,1,,,,,"], HEADER, "line 2", "10 cells, the header names 11"),
        (["u1,user"], "name,scope,limit", "line 1", "column 'limit' is not a budget key"),
        (["u1,user,u"], "name,scope,name", "line 1", "column 'name' is given twice"),
        (
            ["u1,user,al\x1bice,1"],
            "name,scope,match,limit_usd",
            "line 2, column match",
            "contains a control or BIDI character (U+001B at position 2)",
        ),
    ],
)
def test_a_problem_names_the_file_line_and_column(
    tmp_path: Path, lines: list[str], header: str, key: str, problem: str
) -> None:
    path = write(tmp_path, lines, header)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    csv_file = str(tmp_path / "people.csv")
    assert caught.value.path == csv_file
    assert caught.value.key == key
    assert problem.format(csv=csv_file) in caught.value.problem


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    config = tmp_path / "spendgate.yaml"
    config.write_text("budgets_file: nowhere.csv\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"nowhere\.csv: cannot read the budgets file"):
        load_config(config)


def test_check_config_names_a_row_it_warns_about_by_its_line(tmp_path: Path) -> None:
    """A warning about a row (a models pattern no model matches, a user no key carries) names
    the file and the row's line, as an error does: ``budgets[3]`` is in no file the
    operator can open (the YAML lists one budget; the rows follow it)."""
    from click.testing import CliRunner

    from spendgate.cli.main import cli

    path = write(tmp_path, LINES)
    result = CliRunner().invoke(cli, ["check-config", "-c", str(path)])
    assert result.exit_code == 0, result.output
    csv_file = tmp_path / "people.csv"
    # line 5 (after the header, two rows and a blank line): opus, whose o3* matches no model
    assert f"warning: {csv_file} line 5: budget 'opus': models pattern 'o3*' matches" in (
        result.stderr
    )
    # rows 2 and 3 on users no key carries, with no database yet: named by their lines
    assert (
        f"not checked: budgets[0] (team 'ml'), {csv_file} line 2 (user 'alice'), "
        f"{csv_file} line 3 (user 'bob'), {csv_file} line 5 (team 'ml')"
    ) in result.stderr
    assert "budgets[1]" not in result.stderr
    assert "budgets[2]" not in result.stderr


def test_a_file_saved_as_latin_1_is_named_by_its_line_and_column(tmp_path: Path) -> None:
    """As a config file that is not UTF-8: the line and column of the first byte that is not
    (it was Python's "can't decode byte 0xe9 in position 37", a count no editor shows)."""
    path = write(tmp_path, LINES[:1])
    csv_file = tmp_path / "people.csv"
    csv_file.write_bytes(csv_file.read_bytes() + "u9,user,jos\u00e9,,1,,,,,,\n".encode("latin-1"))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == (
        f"{csv_file}: not UTF-8 text at line 3, column 12 (byte 0xe9): save the file as UTF-8"
    )
