"""Load and validate the YAML config. Every problem names the file, the key path and what
was expected, e.g. ``spendgate.yaml: providers.openai.kind: Input should be 'openai', ...``.

No key or text value may hold a control or BIDI character (`spendgate.text.unsafe_in`):
the config's names (teams, orgs, budgets, limits, models, rules) come back in every
report, and none of its settings needs one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from spendgate.config.budget_file import located, read_budget_rows, read_budget_specs
from spendgate.config.budget_file import utf8_text as _utf8
from spendgate.config.budgets import (
    BudgetSpec,
    budgets_by_columns,
    listed_budgets,
    specs_from_columns,
)
from spendgate.config.patterns import ENV_NAME, NAME, PERIOD_PATTERN
from spendgate.config.schema import Config
from spendgate.config.yaml_text import ListedBudgets, parse_yaml_apart
from spendgate.config.yaml_text import key_path as _key_path
from spendgate.errors import ConfigError
from spendgate.text import unsafe_in


def _first_problem(error: ValidationError, source: str) -> ConfigError:
    problems = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not str(p).startswith("function-"))
        message = str(item["msg"]).removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "unknown key"
        elif item["type"] == "string_pattern_mismatch":
            if loc and loc[-1] == "[key]":  # a mapping's key: `models: {"gpt 4o": ...}`
                loc = loc[:-1]
            message = _pattern_words(str(item.get("ctx", {}).get("pattern")), item["input"])
        problems.append((_key_path(loc), message))
    key, message = problems[0]
    if not key:
        key, message = _lift_key(message)
    if len(problems) > 1:
        rest = "; ".join(f"{k or '(top level)'}: {m}" for k, m in problems[1:4])
        message = f"{message} (also: {rest})"
    return ConfigError(source, key, message)


def _pattern_words(pattern: str, given: Any) -> str:
    """What a name, a period or a variable name must look like, in words: pydantic says
    "String should match pattern '^[A-Za-z0-9][A-Za-z0-9_.:/@+-]*$'"."""
    shown = repr(given) if len(str(given)) <= 80 else repr(str(given)[:60]) + "..."
    if pattern == NAME:
        return (
            f"{shown} is not a name: a letter or digit, then letters, digits and "
            "_ . : / @ + - (no spaces)"
        )
    if pattern == PERIOD_PATTERN:
        return (
            f"{shown} is not a period: hourly, daily, weekly, monthly, lifetime or "
            "rolling:<N>m|h|d (rolling:30m, rolling:24h, rolling:7d)"
        )
    if pattern == ENV_NAME:  # never echoed: a key pasted where its variable's name goes
        return (
            "not an environment variable name (letters, digits and _, not starting with a "
            "digit): name the variable that holds the secret (OPENAI_API_KEY), not the secret"
        )
    return f"String should match pattern '{pattern}'"


def _lift_key(message: str) -> tuple[str, str]:
    """Cross-reference checks run on the whole config, so pydantic gives them no location;
    their messages start with the key path (``models.x: provider 'y' is not declared``).
    Move it into `ConfigError.key`, where callers look for it; the text reads the same."""
    head, separator, rest = message.partition(": ")
    top = head.replace("[", ".").split(".", 1)[0]
    if separator and " " not in head and top in Config.model_fields:
        return head, rest
    return "", message


def _unsafe_text(data: Any, location: tuple[int | str, ...] = ()) -> Iterator[tuple[str, str]]:
    """Each key path whose key or text value holds a character a terminal would obey, and
    what it holds."""
    if isinstance(data, str):
        found = unsafe_in(data)
        if found is not None:
            yield _key_path(location), f"contains a control or BIDI character ({found})"
    elif isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and (found := unsafe_in(key)) is not None:
                yield (
                    _key_path((*location, key)),
                    f"the key contains a control or BIDI character ({found})",
                )
            yield from _unsafe_text(value, (*location, str(key)))
    elif isinstance(data, list):
        for index, item in enumerate(data):
            yield from _unsafe_text(item, (*location, index))


def _holds_unsafe(data: Any) -> bool:
    """Whether any key or text value holds such a character. Each of them is one that
    ``repr`` escapes (none is printable: tests/unit/test_text.py), so a repr of the data
    without a backslash holds none: one pass in C over a config of 100,000 budgets. Else
    (a backslash, an escaped harmless character) one search over every key and text
    value decides; `_unsafe_text` then finds where."""
    try:
        if "\\" not in repr(data):
            return False
    except RecursionError:  # nested deeper than repr goes: the walk below does not recurse
        pass
    texts: list[str] = []
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            texts.append(item)
        elif isinstance(item, dict):
            texts.extend(key for key in item if isinstance(key, str))
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return unsafe_in(" ".join(texts)) is not None


def parse_config(
    data: Any, source: str = "<config>", more_budgets: Sequence[BudgetSpec] = ()
) -> Config:
    """``more_budgets``: validated budgets listed after ``budgets:`` (a ``budgets_file``'s
    rows, read by `read_budget_specs`)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", "the top level must be a mapping of settings")
    # a long list validated by columns, its texts checked there: the rest checked here
    listed = budgets_by_columns(data.get("budgets"))
    rest = data if listed is None else {k: v for k, v in data.items() if k != "budgets"}
    unsafe = next(_unsafe_text(rest), None) if _holds_unsafe(rest) else None
    if unsafe is not None:
        key, problem = unsafe
        raise ConfigError(source, key, f"{problem}; names and values must be plain text")
    try:
        if listed is not None or more_budgets:
            given = listed if listed is not None else listed_budgets(data.get("budgets", []))
            data = {**data, "budgets": (*given, *more_budgets)}
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _first_problem(exc, source) from None


def _parse_with_rows(data: Any, source: str, folder: Path) -> Config:
    """`parse_config`, with the rows of ``budgets_file`` (relative to the config's folder)
    listed after ``budgets:``; a problem with a row names the file, its line and column."""
    named = data.get("budgets_file") if isinstance(data, dict) else None
    listed = data.get("budgets", []) if isinstance(data, dict) else None
    if not isinstance(named, str) or not named or not isinstance(listed, list):
        return parse_config(data, source)  # no file, or the schema says what is wrong
    specs = read_budget_specs(folder / named)
    if specs:  # every row a budget: checked column by column (100,000 rows)
        with contextlib.suppress(ConfigError):  # said again below, located in the file
            return parse_config(data, source, specs)
    rows = read_budget_rows(folder / named)
    try:
        return parse_config({**data, "budgets": [*listed, *rows.rows]}, source)
    except ConfigError as exc:
        raise located(exc, rows, len(listed)) from None


def _parse_listed(data: Any, listed: ListedBudgets | None, source: str, folder: Path) -> Config:
    """`_parse_with_rows` of the document; a long ``budgets:`` list that came by columns
    is validated by columns as it came (the specs `parse_config` would make of its
    mappings), else made into the mappings PyYAML gives and validated as any list."""
    if listed is not None:
        columns = dict(zip(listed.keys, listed.columns, strict=True))
        count = len(listed.columns[0])
        specs = None if "budgets_file" in data else specs_from_columns(columns, count)
        if specs is not None:
            return parse_config(data, source, tuple(specs))  # data holds ``budgets: []``
        data["budgets"] = listed.entries()
    return _parse_with_rows(data, source, folder)


def load_config(path: str | Path) -> Config:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(source, "", f"cannot read the file: {exc.strerror or exc}") from None
    text = _utf8(source, raw)
    try:
        data, listed = parse_yaml_apart(source, text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(source, "", f"not valid YAML{where}: {problem}") from None
    config = _parse_listed(data, listed, source, Path(path).parent)
    if config.storage.url.startswith("sqlite:///") and not config.storage.url.startswith(
        "sqlite:////"
    ):
        relative = config.storage.url.removeprefix("sqlite:///")
        if relative != ":memory:":
            resolved = (Path(path).parent / relative).resolve()
            config = config.model_copy(
                update={
                    "storage": config.storage.model_copy(update={"url": f"sqlite:///{resolved}"})
                }
            )
    spool = config.storage.spool_dir
    if spool is not None and not Path(spool).is_absolute():
        resolved_spool = str((Path(path).parent / spool).resolve())
        storage = config.storage.model_copy(update={"spool_dir": resolved_spool})
        config = config.model_copy(update={"storage": storage})
    return config
