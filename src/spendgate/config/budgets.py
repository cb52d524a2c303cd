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
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Annotated, Any, NamedTuple

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


@cache
def _models() -> TypeAdapter[list[BudgetConfig]]:
    return TypeAdapter(list[BudgetConfig])


@cache  # built on first use: a command that reads no config needs neither (CLI start)
def _specs() -> TypeAdapter[list[BudgetSpec]]:
    return TypeAdapter(list[BudgetSpec], config=BudgetConfig.model_config)


def listed_budgets(value: Any) -> tuple[BudgetSpec, ...]:
    """The ``budgets:`` list validated, as `BudgetSpec`s; pydantic's `ValidationError`
    (located under the list) when `BudgetConfig` refuses an entry."""
    if type(value) is tuple and all(type(spec) is BudgetSpec for spec in value):
        return value  # validated before (a config built from another)
    # only mappings: a list given for an entry would fill a named tuple in order
    if type(value) is list and all(type(entry) is dict for entry in value):
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
