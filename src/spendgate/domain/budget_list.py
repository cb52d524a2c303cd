"""The budgets of a book, each built the first time something asks for it. Pure.

A config may list 100,000 budgets (an organisation's per-user limits), and a gateway's
traffic touches the few whose members call it. Building every `Budget` at start (a frozen
`Budget` and its `Scoped` target each, their limits converted) was the largest part of
starting with such a list (docs/benchmarks.md, "Start-up with 100,000 listed budgets").
The book needs less of each budget to file it: its name, its scope and member, its model
patterns and its period (`Outline`, columns the config layer gives in one pass each);
`BudgetList` holds those and a way to build budget ``i``, and builds it once, on first use.

Only construction is deferred: the entries were validated before (the config refuses a
broken budget at load, naming it), so building one cannot fail on a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from operator import attrgetter
from typing import TYPE_CHECKING, NamedTuple, Protocol, overload

if TYPE_CHECKING:
    from spendgate.domain.budgets import Budget, BudgetScope
    from spendgate.domain.periods import Period


class Outline(NamedTuple):
    """Of each budget, by position: what filing it needs, before it is built."""

    names: Sequence[str]
    scopes: Sequence[BudgetScope]
    matches: Sequence[str]
    models: Sequence[tuple[str, ...]]
    periods: Sequence[Period]

    @classmethod
    def of(cls, budgets: Sequence[Budget]) -> Outline:
        """The outline of budgets already built."""
        periods = list(map(_PERIOD_OF, budgets))
        return cls.of_targets(budgets, list(map(_TARGET_OF, budgets)), periods)

    @classmethod
    def of_targets(
        cls, named: Sequence[_Named], targets: Sequence[_Target], periods: Sequence[Period]
    ) -> Outline:
        """Each budget's name and target (scope, member, models), taken from the entries
        given (a budget, its `Scoped`, a config's spec) column by column in C, and its
        period."""
        return cls(
            list(map(_NAME_OF, named)),
            list(map(_SCOPE_OF, targets)),
            list(map(_MATCH_OF, targets)),
            list(map(_MODELS_OF, targets)),
            list(periods),
        )

    def extended(self, other: Outline) -> Outline:
        """These budgets, then ``other``'s."""
        return Outline(
            [*self.names, *other.names],
            [*self.scopes, *other.scopes],
            [*self.matches, *other.matches],
            [*self.models, *other.models],
            [*self.periods, *other.periods],
        )


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Target(Protocol):
    @property
    def scope(self) -> BudgetScope: ...
    @property
    def match(self) -> str: ...
    @property
    def models(self) -> tuple[str, ...]: ...


_NAME_OF = attrgetter("name")
_TARGET_OF = attrgetter("target")
_SCOPE_OF = attrgetter("scope")
_MATCH_OF = attrgetter("match")
_MODELS_OF = attrgetter("models")
_PERIOD_OF = attrgetter("period")


class BudgetList(Sequence["Budget"]):
    """``len(outline.names)`` budgets; budget ``i`` is ``build(i)``, called at most once
    (the first time it is asked for), then kept. Iterating builds them all: what lists
    every budget (the budgets overview, the savings report) gets them all."""

    def __init__(self, outline: Outline, build: Callable[[int], Budget]) -> None:
        self.outline = outline
        self._build = build
        self._built: list[Budget | None] = [None] * len(outline.names)

    def __len__(self) -> int:
        return len(self._built)

    @overload
    def __getitem__(self, index: int) -> Budget: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Budget]: ...

    def __getitem__(self, index: int | slice) -> Budget | Sequence[Budget]:
        if isinstance(index, slice):
            return [self[position] for position in range(len(self))[index]]
        found = self._built[index]
        if found is None:
            if index < 0:
                index += len(self._built)
            found = self._built[index] = self._build(index)
        return found

    def __iter__(self) -> Iterator[Budget]:
        for position in range(len(self._built)):
            yield self[position]

    def __eq__(self, other: object) -> bool:
        """Equal to a sequence of the same budgets, as the tuple it replaces was."""
        if not isinstance(other, Sequence) or isinstance(other, str):
            return NotImplemented
        return len(self) == len(other) and all(map(_same, self, other))

    __hash__ = None  # type: ignore[assignment]

    def built(self) -> int:
        """How many have been built so far."""
        return len(self._built) - self._built.count(None)

    def __repr__(self) -> str:
        return f"BudgetList({len(self)} budgets, {self.built()} built)"


def _same(one: object, other: object) -> bool:
    return one == other
