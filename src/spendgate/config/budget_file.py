"""``budgets_file:``: more budgets, one a row of a CSV file, for lists too long to write
in YAML (an organisation's 100,000 per-user limits, exported from a spreadsheet).

The first row names the columns: any of a budget's keys (`BudgetConfig`: ``name``,
``scope``, ``match``, ``limit_usd``, ...). An empty cell leaves that key out (its default
applies); ``models`` and ``soft_thresholds`` hold their items separated by spaces. Each
row is then a budget as if it were listed under ``budgets:`` after the YAML's own, and is
validated with them; a problem with a row is reported as the file, its line and the column
(`located`). A CSV file parses in C: 100,000 rows in a tenth of the time YAML takes
(docs/benchmarks.md, "Many budgets").

`read_budget_specs` reads the file as columns and validates each column's distinct cells
once (`spendgate.config.budgets.specs_from_columns`): 100,000 rows read and validated in
about 0.3 s of CPU. Where it declines (anything is off), the loader reads the rows with
`read_budget_rows` and validates them entry by entry, which finds the row and says why.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spendgate.config.budgets import MISSING, BudgetConfig, BudgetSpec, specs_from_columns
from spendgate.errors import ConfigError

_COLUMNS = tuple(BudgetConfig.model_fields)
_LISTS = ("models", "soft_thresholds")  # their cells hold items separated by spaces
_AT = re.compile(r"^budgets\[(\d+)\](?:\.(.+))?$")
_MENTION = re.compile(r"\bbudgets\[(\d+)\](?:\.([a-z_]+))?")


@dataclass(frozen=True, slots=True)
class BudgetRows:
    """The rows of a budgets file, as ``budgets:`` entries, and the line each starts on."""

    path: str
    rows: list[dict[str, Any]]
    lines: list[int]


def read_budget_rows(path: Path) -> BudgetRows:
    """The file's rows as budget entries; `ConfigError` (the file, the line) for a file
    that cannot be read, a column that is no budget key, or a row of the wrong width."""
    source = str(path)
    try:  # a spreadsheet's export may start with a byte order mark
        with path.open(encoding="utf-8-sig", newline="") as file:
            return _rows(source, csv.reader(file))
    except UnicodeDecodeError:  # saved as Latin-1 by a spreadsheet: say where
        utf8_text(source, path.read_bytes())
        raise
    except OSError as exc:
        problem = exc.strerror or str(exc)
        raise ConfigError(source, "", f"cannot read the budgets file: {problem}") from None
    except csv.Error as exc:
        raise ConfigError(source, "", f"not valid CSV: {exc}") from None


def read_budget_specs(path: Path) -> list[BudgetSpec] | None:
    """The file's rows as validated budgets, read and validated column by column
    (`specs_from_columns`: each distinct cell of a column once), when every row is one;
    None when anything is off (the file unreadable, a column unknown or given twice, a row
    of the wrong width, a cell refused or holding a control character): then
    `read_budget_rows` and the schema find it and say where (the file, line and column)."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as file:
            reader = csv.reader(file)
            header = next(reader, None)
            rows = list(filter(None, reader))  # blank lines skipped
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if header is None:
        return []
    columns = [column.strip() for column in header]
    if not set(columns) <= set(_COLUMNS) or len(set(columns)) != len(columns):
        return None
    if not rows:
        return []
    if set(map(len, rows)) != {len(columns)}:
        return None
    cells: dict[str, Sequence[Any]] = {}
    for column, given in zip(columns, zip(*rows, strict=True), strict=True):
        if column in _LISTS or "" in given:  # items separated by spaces; a key left out
            found = {cell: _cell(column, cell) for cell in set(given)}
            cells[column] = list(map(found.__getitem__, given))
        else:
            cells[column] = given
    return specs_from_columns(cells, len(rows))


def _cell(column: str, cell: str) -> Any:
    if not cell:
        return MISSING  # an empty cell: the key left out
    return tuple(cell.split()) if column in _LISTS else cell


def _rows(source: str, reader: Any) -> BudgetRows:
    header = next(reader, None)
    if header is None:
        return BudgetRows(source, [], [])
    columns = [column.strip() for column in header]
    for column in columns:
        if column not in _COLUMNS or columns.count(column) > 1:
            known = ", ".join(_COLUMNS)
            problem = "is given twice" if column in _COLUMNS else "is not a budget key"
            raise ConfigError(source, "line 1", f"column {column!r} {problem} ({known})")
    lists = [column for column in _LISTS if column in columns]
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    line = reader.line_num + 1
    for cells in reader:
        if cells:  # not a blank line
            if len(cells) != len(columns):
                raise ConfigError(
                    source, f"line {line}", f"{len(cells)} cells, the header names {len(columns)}"
                )
            row: dict[str, Any] = dict(zip(columns, cells, strict=True))
            if "" in cells:  # an empty cell: the key left out
                row = {column: cell for column, cell in row.items() if cell}
            for column in lists:
                if column in row:
                    row[column] = row[column].split()
            rows.append(row)
            lines.append(line)
        line = reader.line_num + 1
    return BudgetRows(source, rows, lines)


def located(error: ConfigError, rows: BudgetRows, first: int) -> ConfigError:
    """``error`` about ``budgets[i]`` where ``i`` is a row of the file (the YAML lists
    ``first`` budgets before them), as the file, its line and the column; budgets the
    message mentions that are rows are named by their line too."""
    found = _AT.match(error.key)
    if found is None or int(found.group(1)) < first:
        return error

    index, column = int(found.group(1)), found.group(2)
    key = f"line {rows.lines[index - first]}" + (f", column {column}" if column else "")
    return ConfigError(rows.path, key, mention_rows(error.problem, rows.path, rows.lines, first))


def mention_rows(text: str, path: str, lines: Sequence[int], first: int) -> str:
    """``text`` with each ``budgets[i]`` that is a row of the file ``path`` (the YAML lists
    ``first`` budgets before them; ``lines``: the line each row starts on) named as the
    file, its line and the column: ``b.csv line 7, column limit_usd``."""

    def mention(match: re.Match[str]) -> str:
        index = int(match.group(1))
        if not first <= index < first + len(lines):
            return match.group(0)
        column = match.group(2)
        return f"{path} line {lines[index - first]}" + (f", column {column}" if column else "")

    return _MENTION.sub(mention, text)


def row_lines(path: Path) -> list[int]:
    """The line each row of a budgets file starts on (blank lines skipped), read with the
    C reader alone: what `check-config` names the rows its warnings are about by."""
    with path.open(encoding="utf-8-sig", newline="") as file:
        reader = csv.reader(file)
        lines: list[int] = []
        if next(reader, None) is None:
            return lines
        line = reader.line_num + 1
        for cells in reader:
            if cells:
                lines.append(line)
            line = reader.line_num + 1
    return lines


def utf8_text(source: str, raw: bytes) -> str:
    """The file's text; a file that is not UTF-8 (saved as Latin-1 or UTF-16 by an editor)
    is a `ConfigError` naming where, as a YAML error would be."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = raw[: exc.start]
        line = before.count(b"\n") + 1
        column = exc.start - (before.rfind(b"\n") + 1) + 1
        raise ConfigError(
            source,
            "",
            f"not UTF-8 text at line {line}, column {column} (byte 0x{raw[exc.start]:02x}): "
            "save the file as UTF-8",
        ) from None
