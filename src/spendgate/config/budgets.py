"""The ``budgets:`` list of the config: `BudgetConfig`, the schema of one entry (pydantic,
the source of every error message), and `BudgetSpec`, what a validated entry is kept as.

Built for size: a config may list 100,000 budgets one by one (an organisation's per-user
limits). A pydantic model per entry took about 4 µs to validate (its own check of the
limits is Python) and 1.7 kB to hold. `listed_budgets` has pydantic's core validate the
list straight into `BudgetSpec`s (named tuples with `BudgetConfig`'s types, constraints
and defaults: about 2 µs, a few hundred bytes each) and then checks each one's limits
(`limit_problem`, `BudgetConfig`'s check); if anything is refused, the list is validated
again as `BudgetConfig` models, so that every error (its key path, its message, the others
named with it) reads exactly as it always has. tests/unit/test_budget_list.py checks that
both ways give the same budgets and refuse the same entries.

A long list is validated column by column first (`specs_from_columns`, below: each
distinct value of a key once, about 1 µs a budget); the ways above run only where that
one declines.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from functools import cache
from itertools import chain, repeat
from math import copysign
from operator import methodcaller
from typing import Annotated, Any, Final, NamedTuple, get_type_hints

from pydantic import (
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from spendgate.config.patterns import NAME, PERIOD_PATTERN
from spendgate.config.storage import Strict
from spendgate.domain.budgets import BudgetScope, HiddenInputPolicy
from spendgate.text import unsafe_in

DEFAULT_THRESHOLDS = (Decimal("0.8"),)


class BudgetConfig(Strict):
    """A spend or token limit on one scope, per period. See docs/budgets.md."""

    name: Annotated[str, Field(pattern=NAME)]
    scope: BudgetScope
    match: Annotated[str, Field(min_length=1)] = "*"
    models: list[str] = Field(default_factory=list)
    limit_usd: Decimal | None = None
    limit_tokens: Annotated[int | None, Field(gt=0)] = None
    share_of: Annotated[str | None, Field(pattern=NAME)] = None  # a share of another budget
    share: Annotated[Decimal | None, Field(gt=0, le=1)] = None  # ... this share of its limit
    period: Annotated[str, Field(pattern=PERIOD_PATTERN)] = "monthly"
    hard: bool = True
    soft_thresholds: list[Annotated[Decimal, Field(gt=0, lt=1)]] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS)
    )
    hidden_input: HiddenInputPolicy = HiddenInputPolicy.BOUND

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetConfig:
        problem = limit_problem(
            self.limit_usd,
            self.limit_tokens,
            self.share_of,
            self.share,
            self.hard,
            self.hidden_input,
        )
        if problem is not None:
            raise ValueError(problem)
        return self


def limit_problem(
    limit_usd: Decimal | None,
    limit_tokens: int | None,
    share_of: str | None,
    share: Decimal | None,
    hard: bool,
    hidden_input: HiddenInputPolicy,
) -> str | None:
    """What is wrong with a budget's combination of limits and policies; None if nothing."""
    if hidden_input is HiddenInputPolicy.ESTIMATE and hard:
        return (
            "hidden_input: estimate is for soft budgets (hard: false); a hard budget "
            "bounds input it cannot see (bound) or refuses it (refuse)"
        )
    given = [limit_usd is not None, limit_tokens is not None, bool(share_of)]
    if sum(given) != 1:
        return "give exactly one of limit_usd, limit_tokens or share_of"
    if (share_of is None) != (share is None):
        return "share_of and share go together (share: a fraction such as 0.2)"
    if limit_usd is not None and limit_usd < 0:
        return "limit_usd must not be negative"
    return None


class BudgetSpec(NamedTuple):
    """One validated entry of ``budgets:``: `BudgetConfig`'s fields, types, constraints
    and defaults (lists as tuples), validated by pydantic's core alone (`listed_budgets`)."""

    name: Annotated[str, Field(pattern=NAME)]
    scope: BudgetScope
    match: Annotated[str, Field(min_length=1)] = "*"
    models: tuple[str, ...] = ()
    limit_usd: Decimal | None = None
    limit_tokens: Annotated[int | None, Field(gt=0)] = None
    share_of: Annotated[str | None, Field(pattern=NAME)] = None
    share: Annotated[Decimal | None, Field(gt=0, le=1)] = None
    period: Annotated[str, Field(pattern=PERIOD_PATTERN)] = "monthly"
    hard: bool = True
    soft_thresholds: tuple[Annotated[Decimal, Field(gt=0, lt=1)], ...] = DEFAULT_THRESHOLDS
    hidden_input: HiddenInputPolicy = HiddenInputPolicy.BOUND

    @classmethod
    def of(cls, entry: BudgetConfig) -> BudgetSpec:
        return cls(
            entry.name,
            entry.scope,
            entry.match,
            tuple(entry.models),
            entry.limit_usd,
            entry.limit_tokens,
            entry.share_of,
            entry.share,
            entry.period,
            entry.hard,
            tuple(entry.soft_thresholds),
            entry.hidden_input,
        )

    def entry(self) -> dict[str, Any]:
        """As ``BudgetConfig.model_dump`` writes it (the config dumped: its digest)."""
        return {
            **self._asdict(),
            "models": [*self.models],
            "soft_thresholds": [*self.soft_thresholds],
        }

    def problem(self) -> str | None:
        """What `BudgetConfig`'s own check says of these limits and policies."""
        return limit_problem(
            self.limit_usd,
            self.limit_tokens,
            self.share_of,
            self.share,
            self.hard,
            self.hidden_input,
        )


# ---------------------------------------------------------------------------- columns
# Long lists validated column by column: each distinct value of a key once. A list of
# 100,000 budgets repeats most of its values (one scope, one period, a few dozen limits;
# only names and members differ). `specs_from_columns` takes the list as columns (one
# sequence of values per key, `MISSING` where an entry leaves the key out), has pydantic
# validate each column's distinct values against that key's type in `BudgetSpec` (its
# constraints and conversions, one call per column), checks each distinct combination of
# limits and policies with `limit_problem`, and builds the `BudgetSpec`s in C: what
# validating each entry gives (tests/unit/test_budget_columns.py). It accepts or declines,
# never refuses: None for a list with anything it does not take (a value refused, a key
# missing or unknown, a column whose equal values may convert differently, such as ``1``,
# ``True`` and ``1.0``); the entries are then validated one by one, which names the entry,
# the key and the problem as it always has.


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()  # the entry leaves this key out: its default applies
_REQUIRED = object()
# Equal values of these types convert alike (a text is one text, an integer one integer);
# ``True == 1`` is why a column may not mix booleans and integers.
# Floats too, unless beside integers (``1 == 1.0``), NaN (not equal to itself) or -0.0.
_PLAIN = frozenset({str, int, bool, float, type(None), _Missing, tuple})  # tuples: of texts
_KEYS = frozenset(BudgetSpec._fields)
_SAMPLE = 256  # a column whose first values are mostly distinct is validated whole
_LIMITS = ("limit_usd", "limit_tokens", "share_of", "share", "hard", "hidden_input")


@cache
def _adapter(key: str) -> TypeAdapter[list[Any]]:
    """A list of values of ``key``'s type in `BudgetSpec`, with its constraints."""
    hint = get_type_hints(BudgetSpec, include_extras=True)[key]
    return TypeAdapter(list[hint])  # type: ignore[valid-type]


def budgets_by_columns(value: Any) -> tuple[BudgetSpec, ...] | None:
    """A ``budgets:`` list of mappings validated by columns (`specs_from_columns`), its
    texts checked for control characters too; None when that way declines."""
    if type(value) is not list or not set(map(type, value)) <= {dict}:  # in C
        return None
    specs = _specs_from_entries(value)
    return tuple(specs) if specs is not None else None


def _specs_from_entries(entries: list[dict[Any, Any]]) -> list[BudgetSpec] | None:
    """The ``budgets:`` entries (mappings) as `specs_from_columns` validates them."""
    shapes = set(map(tuple, entries))  # each entry's keys, in order
    if len(shapes) == 1:  # every entry gives the same keys (a long list): in C
        (keys,) = shapes
        columns = dict(zip(keys, zip(*map(dict.values, entries), strict=True), strict=True))
    else:
        given = set(chain.from_iterable(shapes))
        if not given <= _KEYS:
            return None
        columns = {key: list(map(methodcaller("get", key, MISSING), entries)) for key in given}
    return specs_from_columns(columns, len(entries))


def specs_from_columns(columns: Mapping[str, Sequence[Any]], count: int) -> list[BudgetSpec] | None:
    """``count`` budgets, entry ``i`` holding ``columns[key][i]`` for each key; None when
    any value is not accepted (or not one this way takes)."""
    fields: list[Sequence[Any]] = []
    for key in BudgetSpec._fields:
        column = columns.get(key)
        default = BudgetSpec._field_defaults.get(key, _REQUIRED)
        if column is None:
            if default is _REQUIRED:
                return None
            fields.append([default] * count)
            continue
        validated = _validated(key, column, default)
        if validated is None:
            return None
        fields.append(validated)
    if not columns.keys() <= _KEYS:
        return None  # a key that is no budget's
    if any(len(column) != count for column in columns.values()):
        return None
    rows = zip(*fields, strict=True)
    specs: list[BudgetSpec] = list(map(tuple.__new__, repeat(BudgetSpec), rows))
    limits = [fields[BudgetSpec._fields.index(key)] for key in _LIMITS]
    if any(limit_problem(*combination) for combination in set(zip(*limits, strict=True))):
        return None
    return specs


def _validated(key: str, column: Sequence[Any], default: Any) -> Sequence[Any] | None:
    """The column's values validated, each distinct one once; None if any is refused."""
    kinds = set(map(type, column))
    if list in kinds:  # ``models``, ``soft_thresholds``: as tuples, to be told apart
        column = [tuple(value) if type(value) is list else value for value in column]
        kinds = (kinds - {list}) | {tuple}
    if tuple in kinds:  # of texts only (hashable, and alike when equal)
        items = chain.from_iterable(value for value in column if type(value) is tuple)
        if not set(map(type, items)) <= {str}:
            return None
    if not kinds <= _PLAIN or (bool in kinds and int in kinds):
        return None
    if float in kinds and not _plain_floats(column, kinds):
        return None
    if kinds == {str} and len(set(column[:_SAMPLE])) > _SAMPLE // 2:
        distinct: Mapping[Any, None] = {}  # names, members: mostly distinct, taken whole
        given = list(column)
    else:
        distinct = dict.fromkeys(column)
        given = [value for value in distinct if value is not MISSING]
    if _unsafe(given, kinds):
        return None  # the loader names the key and the character
    try:
        values = _adapter(key).validate_python(given)
    except ValidationError:
        return None
    if MISSING in distinct and default is _REQUIRED:
        return None
    if kinds == {str} and set(map(type, values)) == {str} and given == values:
        # texts kept as given (names, members): the column serves as it is
        return column
    found = dict(zip(given, values, strict=True))
    found[MISSING] = default
    return list(map(found.__getitem__, column))


def _plain_floats(column: Sequence[Any], kinds: set[type]) -> bool:
    """Whether the column's floats are told apart by equality as by value: no integer or
    boolean beside them, no NaN, no negative zero."""
    if int in kinds or bool in kinds:
        return False
    floats = {value for value in column if type(value) is float}
    return all(value == value and (value != 0 or copysign(1.0, value) > 0) for value in floats)


def _unsafe(values: list[Any], kinds: set[type]) -> bool:
    """Whether a text among ``values`` (or in a tuple of them) holds a character a report
    would have to escape (`spendgate.text.unsafe_in`, as the loader checks every text)."""
    texts = values if kinds <= {str, _Missing} else [v for v in values if type(v) is str]
    if tuple in kinds:
        texts = [*texts, *chain.from_iterable(v for v in values if type(v) is tuple)]
    return unsafe_in(" ".join(texts)) is not None


@cache
def _models() -> TypeAdapter[list[BudgetConfig]]:
    return TypeAdapter(list[BudgetConfig])


@cache  # built on first use: a command that reads no config needs neither (CLI start)
def _specs() -> TypeAdapter[list[BudgetSpec]]:
    return TypeAdapter(list[BudgetSpec], config=BudgetConfig.model_config)


def listed_budgets(value: Any) -> tuple[BudgetSpec, ...]:
    """The ``budgets:`` list validated, as `BudgetSpec`s; pydantic's `ValidationError`
    (located under the list) when `BudgetConfig` refuses an entry."""
    if type(value) is tuple and set(map(type, value)) <= {BudgetSpec}:
        return value  # validated before (a config built from another, the loader)
    # only mappings: a list given for an entry would fill a named tuple in order
    if type(value) is list and all(type(entry) is dict for entry in value):
        columns = budgets_by_columns(value)
        if columns is not None:  # each distinct value validated once (100,000 listed)
            return columns
        try:
            specs = _specs().validate_python(value)
        except ValidationError:
            specs = None
        if specs is not None and not any(spec.problem() for spec in specs):
            return tuple(specs)
    # refused: pydantic says why as it says it of the models, every entry located
    return tuple(BudgetSpec.of(entry) for entry in _models().validate_python(value))


# ``budgets: Listed`` in the schema: the list validated as above, held as `BudgetSpec`s;
# its entries are documented as `BudgetConfig`'s keys (tests/test_docs.py).
Listed = Annotated[
    tuple[BudgetSpec, ...],
    PlainValidator(listed_budgets, json_schema_input_type=list[BudgetConfig]),
    PlainSerializer(lambda specs: [spec.entry() for spec in specs]),
]
