"""Budgets: which limits apply to a request, and the counters they are kept in. Pure.

A budget is declared once (config) and applies per *member* of its scope: ``scope: team,
match: ml`` is one budget for team ml; ``scope: user, match: "*"`` gives every user a
budget of their own. ``models`` narrows a budget to requested models matching any of the
glob patterns. A counter is one (budget, member, time bucket); see `spendgate.domain.periods`.

Which budgets apply to a caller is looked up, not searched: `ScopeIndex` files every
budget (and request cap) under its (scope, member) or, for ``match: "*"``, under its scope
alone, so a caller costs a few dictionary lookups whether 10 or 100,000 budgets are listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Generic, Protocol, TypeVar

from spendgate.domain.budget_list import BudgetList, Outline
from spendgate.domain.identity import ApiKey
from spendgate.domain.loops import LoopPolicy
from spendgate.domain.periods import Calendar, Period, Window, bucket_end, window
from spendgate.money import format_dollars

BASIS_POINTS = 10_000
# The largest limit a run-time change may set (an override, a key's own budget or rate): what
# SQLite's and PostgreSQL's integer columns hold, in the budget's unit ($9.2 billion in
# nano-dollars). A larger one failed the storage's write as a 503 "storage is failing".
MAX_LIMIT = 2**63 - 1


def limit_bound(unit: Unit, ceiling: int = MAX_LIMIT) -> str:
    """``ceiling`` (the largest limit storage keeps: `MAX_LIMIT` or less) as an operator
    reads it, in ``unit``."""
    if unit is Unit.NANOS:
        return f"${ceiling // 10**9:,}"
    return unit.render(ceiling)


# Callers whose applicable budgets are remembered (then start over). A miss costs one index
# lookup (~10 us); each entry holds ~850 bytes, so 4,096 held 3.5 MB after traffic from
# 10,000 keys, which the cache could not serve anyway (docs/benchmarks.md, "Memory").
APPLIES_CACHE = 1024


class BudgetScope(StrEnum):
    """Who a budget, limit, cap or routing rule applies to (the config's ``scope``)."""

    ORG = "org"
    TEAM = "team"
    SERVICE = "service"
    USER = "user"
    KEY = "key"
    TAG = "tag"
    SESSION = "session"
    MODEL = "model"


class Unit(Enum):
    NANOS = "usd"
    TOKENS = "tokens"
    REQUESTS = "requests"  # one per request sent
    CONCURRENT = "concurrent"  # one per request in flight, released when it ends

    # Members are singletons compared by identity: hashed by it too, in C (Enum's own
    # __hash__ is Python code, run for every dict lookup on the request path).
    __hash__ = object.__hash__

    def render(self, amount: int) -> str:
        if self is Unit.NANOS:
            return format_dollars(amount, places=6)
        if self is Unit.CONCURRENT:
            return f"{amount:,} in flight"
        noun = self.value[:-1] if amount == 1 else self.value  # "1 request", "2 tokens"
        return f"{amount:,} {noun}"


class HiddenInputPolicy(StrEnum):
    """What a budget does with a request whose provider bills input its body does not show
    (the config's ``hidden_input``; docs/budgets.md)."""

    BOUND = "bound"  # reserve what the provider could bill at most
    REFUSE = "refuse"  # refuse such requests
    ESTIMATE = "estimate"  # take the body's count (soft budgets only)


class Kind(Enum):
    BUDGET = "budget"  # clamps the output ceiling when it can, refuses (non-retryable) else
    LIMIT = "limit"  # a rate limit: never clamps; refuses with a retry-after
    LOOP = "loop"  # the same request repeated: refuses, non-retryable

    __hash__ = object.__hash__  # (as `Unit`'s)


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, for what: everything a scope can be matched against."""

    key: ApiKey
    org: str | None
    model: str
    session: str | None = None
    fingerprint: str | None = None  # of the request's content, for loop detection


@dataclass(frozen=True, slots=True)
class Scoped:
    """A scope, a member pattern and model patterns: what budgets and caps apply to."""

    scope: BudgetScope
    match: str
    models: tuple[str, ...]

    def members(self, caller: Caller) -> list[str]:
        values = _scope_values(self.scope, caller)
        if self.match == "*":
            return values
        return [value for value in values if value == self.match]

    def covers_model(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, pattern) for pattern in self.models)


def _scope_values(scope: BudgetScope, caller: Caller) -> list[str]:
    key = caller.key
    if scope is BudgetScope.TAG:
        return list(dict.fromkeys(key.tags))  # a tag named twice is still one counter
    value = {
        BudgetScope.ORG: caller.org,
        BudgetScope.TEAM: key.team,
        BudgetScope.SERVICE: key.service,
        BudgetScope.USER: key.user,
        BudgetScope.KEY: key.id,
        BudgetScope.SESSION: caller.session,
        BudgetScope.MODEL: caller.model,
    }[scope]
    return [value] if value else []


T = TypeVar("T")
WILD = "*"


class ScopeIndex(Generic[T]):
    """Entries (budgets, caps) filed by their target: under (scope, member) for a named
    member, under the scope alone for ``match: "*"``. `matching` gives, for a caller, the
    entries whose target has members for it, with those members, in the order the entries
    were given: exactly what testing ``target.members(caller)`` on every entry gives, in
    time that grows with what applies, not with what is listed. Model filters are left
    to the caller (`Scoped.covers_model`)."""

    def __init__(self, entries: Sequence[tuple[Scoped, T]]) -> None:
        targets = [target for target, _ in entries]
        self._file(
            [target.scope for target in targets],
            [target.match for target in targets],
            tuple(entry for _, entry in entries),
        )

    @classmethod
    def of(
        cls, scopes: Sequence[BudgetScope], matches: Sequence[str], entries: Sequence[T]
    ) -> ScopeIndex[T]:
        """Entry ``i`` filed under ``scopes[i]`` and ``matches[i]``: its target, given
        without the entry itself (a `spendgate.domain.budget_list.BudgetList` builds each
        budget when `matching` first finds it)."""
        index: ScopeIndex[T] = cls.__new__(cls)
        index._file(scopes, matches, entries)
        return index

    def _file(
        self, scopes: Sequence[BudgetScope], matches: Sequence[str], entries: Sequence[T]
    ) -> None:
        self._entries = entries
        named: dict[BudgetScope, dict[str, tuple[int, ...]]] = {}
        wild: dict[BudgetScope, tuple[int, ...]] = {}
        distinct = dict.fromkeys(scopes)  # a few, in C
        for scope in distinct:
            if len(distinct) == 1:
                positions: Sequence[int] = range(len(scopes))
                members = matches
            else:
                positions = [at for at, each in enumerate(scopes) if each == scope]
                members = list(map(matches.__getitem__, positions))
            if WILD not in members:  # each member named once (a long list): filed in C
                filed: dict[str, tuple[int, ...]] = dict(zip(members, zip(positions), strict=True))
                if len(filed) == len(members):
                    named[scope] = filed
                    continue
            found = self._file_each(positions, members)
            if found[0]:
                named[scope] = found[0]
            if found[1]:
                wild[scope] = found[1]
        self._named = named
        self._wild = wild
        self._scopes = tuple(scope for scope in BudgetScope if scope in wild or scope in named)

    @staticmethod
    def _file_each(
        positions: Sequence[int], members: Sequence[str]
    ) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...]]:
        """One scope's entries: by member, and those for any member (``match: "*"``)."""
        named: dict[str, tuple[int, ...]] = {}
        wild: list[int] = []
        for position, match in zip(positions, members, strict=True):
            if match == WILD:
                wild.append(position)
            else:
                named[match] = (*named.get(match, ()), position)  # mostly one per member
        return named, tuple(wild)

    def matching(
        self, caller: Caller, skip: frozenset[BudgetScope] = frozenset()
    ) -> list[tuple[T, tuple[str, ...]]]:
        """The entries with members for ``caller`` and those members (scopes in ``skip``
        left out), in the order given."""
        found: list[tuple[int, tuple[str, ...]]] = []
        for scope in self._scopes:
            if scope in skip:
                continue
            values = _scope_values(scope, caller)
            if not values:
                continue
            wild = self._wild.get(scope)
            if wild is not None:
                members = tuple(values)
                found.extend((position, members) for position in wild)
            names = self._named.get(scope, _NONE)
            for value in values:
                named = names.get(value)
                if named is not None:
                    found.extend((position, (value,)) for position in named)
        found.sort(key=_first)  # a scope's wildcards, names and tags interleave in the book
        entries = self._entries
        return [(entries[position], members) for position, members in found]


_NONE: Mapping[str, tuple[int, ...]] = MappingProxyType({})


def _first(pair: tuple[int, tuple[str, ...]]) -> int:
    return pair[0]


@dataclass(frozen=True, slots=True)
class Budget:
    name: str
    target: Scoped
    unit: Unit
    limit: int  # nano-dollars or tokens, as configured (runtime overrides live in storage)
    period: Period
    hard: bool
    soft_bp: tuple[int, ...]  # soft thresholds in basis points of the limit, ascending
    kind: Kind = Kind.BUDGET
    shadow: bool = False  # counted and reported, never blocks
    hidden_input: HiddenInputPolicy = HiddenInputPolicy.BOUND

    @property
    def clamps(self) -> bool:
        return self.kind is Kind.BUDGET

    @property
    def blocks(self) -> bool:
        return self.hard and not self.shadow

    def describe(self, member: str) -> str:
        if self.kind is Kind.LIMIT:
            return f"{self.target.scope.value} '{member}' ({self.name})"
        scope = self.target.scope.value
        models = f" on {', '.join(self.target.models)}" if self.target.models else ""
        return f"{scope} '{member}'{models} ({self.name}, {self.period})"


@dataclass(frozen=True, slots=True)
class CounterRef:
    """One budget's counter for one member in the current window."""

    budget: Budget
    member: str
    window: Window
    # "budget|member|bucket_ms": made once (`BudgetBook.counters` keeps a caller's refs)
    id: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.budget.name}|{self.member}|{self.window.bucket_ms}")


@dataclass(frozen=True, slots=True)
class RequestCap:
    target: Scoped
    max_input_tokens: int | None
    max_request_nanos: int | None


class PerKey(Protocol):
    """The budgets a key carries itself (`spendgate.domain.key_limits`)."""

    def __call__(self, key: ApiKey) -> tuple[Budget, ...]: ...

    def seen(self) -> Iterable[Budget]:
        """Those of the keys met so far (their counters are pruned like the others)."""
        ...


class BudgetBook:
    """Every declared budget and request cap, and the calendar they are counted in; and,
    with ``per_key``, the budgets each key carries itself.

    ``budgets`` may be a `BudgetList`: then each budget is built the first time a lookup
    finds it (a config may list 100,000 budgets, and a gateway's traffic touches few)."""

    def __init__(
        self,
        budgets: Sequence[Budget],
        caps: Sequence[RequestCap],
        calendar: Calendar,
        loop: Budget | None = None,
        loops: LoopPolicy | None = None,
        per_key: PerKey | None = None,
    ) -> None:
        self.budgets: Sequence[Budget] = (
            budgets if isinstance(budgets, BudgetList) else tuple(budgets)
        )
        self.caps = tuple(caps)
        self.calendar = calendar
        self.loop = loop  # the loop detector (a requests counter per key and fingerprint)
        self.loops = loops  # how long a detected loop stays blocked (None: detection off)
        self.per_key = per_key
        outline = budgets.outline if isinstance(budgets, BudgetList) else Outline.of(self.budgets)
        self._outline = outline
        # built in C where it can be (map, zip): a book may hold 100,000 budgets
        self._by_name = dict(zip(outline.names, range(len(outline.names)), strict=True))
        self._windows: dict[Period, tuple[datetime, datetime, Window]] = {}
        self._applies: dict[tuple[object, ...], tuple[tuple[Budget, tuple[str, ...]], ...]] = {}
        # id of an `_applies` entry -> (it, its windows, its counters): `counters`
        self._refs: dict[int, tuple[object, tuple[Window, ...], tuple[CounterRef, ...]]] = {}
        self._index = ScopeIndex.of(outline.scopes, outline.matches, self.budgets)
        self._cap_index = ScopeIndex([(cap.target, cap) for cap in self.caps])
        scopes = set(outline.scopes)
        self._by_model = BudgetScope.MODEL in scopes or any(outline.models)
        self._by_session = BudgetScope.SESSION in scopes
        # each distinct period once, in the order met (the same object is shared by many)
        self._period_ids = {id(period): period for period in outline.periods}
        self._periods = tuple(dict.fromkeys(self._period_ids.values()))

    def window(self, period: Period, now: datetime) -> Window:
        """`spendgate.domain.periods.window`, remembered until its bucket changes: time-zone
        arithmetic on every request of every budget is measurable on the hot path."""
        cached = self._windows.get(period)
        if cached is not None and cached[0] <= now < cached[1]:
            return cached[2]
        span = window(period, now, self.calendar)
        self._windows[period] = (span.bucket, bucket_end(period, span), span)
        return span

    def __bool__(self) -> bool:
        return bool(self.budgets or self.caps or self.loop)

    def get(self, name: str) -> Budget | None:
        position = self._by_name.get(name)
        return self.budgets[position] if position is not None else None

    def names(self) -> Sequence[str]:
        """The declared budgets' names, in order (none of them built for it)."""
        return self._outline.names

    def any_for(self, key: ApiKey) -> bool:
        """Whether anything here may count a request of ``key``: a declared budget, cap or
        loop detector, or a budget the key carries itself."""
        return bool(self) or (self.per_key is not None and bool(self.per_key(key)))

    def counters(self, caller: Caller, now: datetime) -> list[CounterRef]:
        found = self._applying(caller)
        spans = tuple([self.window(budget.period, now) for budget, _ in found])
        # The same refs serve every request of a caller within its windows (they are
        # frozen): made once, not six objects and their ids on every request.
        made = self._refs.get(id(found))
        if made is not None and made[0] is found and made[1] == spans:
            refs = list(made[2])
        else:
            refs = [
                CounterRef(budget, member, span)
                for (budget, members), span in zip(found, spans, strict=True)
                for member in members
            ]
            if len(self._refs) >= APPLIES_CACHE:
                self._refs.clear()
            self._refs[id(found)] = (found, spans, tuple(refs))
        if self.per_key is not None:
            for budget in self.per_key(caller.key):
                refs.append(CounterRef(budget, caller.key.id, self.window(budget.period, now)))
        if self.loop is not None and caller.fingerprint is not None:
            member = f"{caller.key.id}|{caller.fingerprint}"
            refs.append(CounterRef(self.loop, member, self.window(self.loop.period, now)))
        return refs

    def _applying(self, caller: Caller) -> tuple[tuple[Budget, tuple[str, ...]], ...]:
        """The budgets that apply to a caller and its members of each, in the order they
        were declared: found through the index (a few lookups, however many budgets are
        listed), and the same for every request of one key, model and session, so
        remembered (model globs and tuples on every request are measurable)."""
        key = caller.key
        who: tuple[object, ...] = (key.id, key.user, key.service, key.team, key.tags, caller.org)
        if self._by_model:
            who += (caller.model,)
        if self._by_session:  # else one entry serves every session of the key
            who += (caller.session,)
        found = self._applies.get(who)
        if found is None:
            model = caller.model
            found = tuple(
                (budget, members)
                for budget, members in self._index.matching(caller)
                if budget.target.covers_model(model)
            )
            if len(self._applies) >= APPLIES_CACHE:
                self._applies.clear()
            self._applies[who] = found
        return found

    def oldest_counted(self, now: datetime) -> dict[str, int]:
        """Per budget (and the loop detector), the oldest bucket its window still counts."""
        since = {key: self.window(period, now).since_ms for key, period in self._period_ids.items()}
        outline = self._outline  # no budget built for it: in C, 100,000 listed
        counted = map(since.__getitem__, map(id, outline.periods))
        oldest = dict(zip(outline.names, counted, strict=True))
        extra: list[Budget] = [self.loop] if self.loop is not None else []
        if self.per_key is not None:
            extra.extend(self.per_key.seen())
        oldest.update((budget.name, self.window(budget.period, now).since_ms) for budget in extra)
        return oldest

    def caps_for(self, caller: Caller) -> list[RequestCap]:
        if not self.caps:
            return []
        model = caller.model
        return [
            cap for cap, _ in self._cap_index.matching(caller) if cap.target.covers_model(model)
        ]

    def counting(self, caller: Caller) -> list[tuple[Budget, tuple[str, ...]]]:
        """Every declared budget with members for ``caller`` whatever the model, per-session
        and per-model ones left out (they depend on the request): what a caller's view of
        its budgets lists (`spendgate.services.budgets.BudgetService.for_caller`)."""
        return self._index.matching(caller, skip=_PER_REQUEST)


_PER_REQUEST = frozenset({BudgetScope.SESSION, BudgetScope.MODEL})


LIMIT_BUCKETS = 10  # a rate limit's window is kept in tenths
LIMIT_MIN_BUCKET = timedelta(milliseconds=100)


def limit_period(length: timedelta) -> Period:
    """The rolling window of a rate limit: kept in tenths, never finer than 100 ms."""
    return Period("rolling", length, bucket=max(LIMIT_MIN_BUCKET, length / LIMIT_BUCKETS))


def loop_detector(max_repeats: int, window_s: float) -> Budget | None:
    """The same request (same key, same fingerprint) more than ``max_repeats`` times in the
    window is a loop: the next one is refused, and the pair blocked (`spendgate.domain.loops`)."""
    if max_repeats <= 0:
        return None
    return Budget(
        name="loop-detection",
        target=Scoped(BudgetScope.KEY, "*", ()),
        unit=Unit.REQUESTS,
        limit=max_repeats,
        period=limit_period(timedelta(seconds=window_s)),
        hard=True,
        soft_bp=(),
        kind=Kind.LOOP,
    )
