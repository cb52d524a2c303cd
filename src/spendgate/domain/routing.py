"""Which model serves a request: aliases, rewrite rules, premium exceptions, budget-aware
downgrades and shadow rules. Pure: the caller passes in how full the watched budgets are.

A decision walks three steps in order:

1. **alias**: a name such as ``default`` resolves to a model; the most specific scope wins
   (key, session, user, service, team, org, tag, then everyone), among aliases whose model
   speaks the request's API dialect. A declared model's own name needs no alias.
2. **rewrite**: the first rule whose scope and model patterns match moves the request to its
   ``to`` model, unless the request is entitled to premium and asked for a premium model.
3. **downgrade**: each rule whose budget is used past its threshold steps one tier down.

Shadow rules run the same walk on a second track: what they would have served is recorded,
the request is served as the enforced rules decide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from fnmatch import fnmatchcase

from spendgate.domain.budgets import BASIS_POINTS, WILD, BudgetScope, Caller, Scoped
from spendgate.domain.models import Dialect, ModelTable


class RouteKind(StrEnum):
    ALIAS = "alias"  # a name such as `default` resolves to a model, per scope
    REWRITE = "rewrite"  # requests for some models are served by another
    DOWNGRADE = "downgrade"  # past a budget's soft threshold, the next cheaper tier serves


@dataclass(frozen=True, slots=True)
class Premium:
    """Where the premium models stay available although a rewrite rule would move them
    (the config's ``routing.premium``)."""

    models: tuple[str, ...] = ()  # patterns: what counts as premium
    keys: frozenset[str] = frozenset()  # key ids always allowed premium
    users: frozenset[str] = frozenset()
    header: str = "x-spendgate-premium"
    allowance_budget: str | None = None  # opt-in honoured while this budget has room
    min_input_tokens: int | None = None  # big prompts keep premium
    with_tools: bool = False  # requests that carry tools keep premium
    tags: frozenset[str] = frozenset()  # keys with one of these tags keep premium


_SPECIFICITY = {
    BudgetScope.KEY: 0,
    BudgetScope.SESSION: 1,
    BudgetScope.USER: 2,
    BudgetScope.SERVICE: 3,
    BudgetScope.TEAM: 4,
    BudgetScope.ORG: 5,
    BudgetScope.TAG: 6,
    BudgetScope.MODEL: 7,
}
_EVERYONE = 99  # after every scoped rule (scoped ones rank 0..15)


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    kind: RouteKind
    who: Scoped | None  # None: every caller
    alias: str | None
    models: tuple[str, ...]
    to: str | None
    budget: str | None
    at_bp: int  # downgrade: basis points of the budget used that trigger it
    shadow: bool

    def applies_to(self, caller: Caller, model: str | None = None) -> bool:
        """Whether the rule's scope takes in this caller. ``model``: the model the request
        has reached, which a ``scope: model`` rewrite or downgrade matches (as a ``scope:
        model`` budget counts the model that serves); without it, the name sent (aliases)."""
        if self.who is None:
            return True
        if model is not None and self.who.scope is BudgetScope.MODEL:
            return self.who.match in (WILD, model)
        return bool(self.who.members(caller))

    def covers(self, model: str) -> bool:
        return not self.models or any(fnmatchcase(model, p) for p in self.models)

    @property
    def specificity(self) -> int:
        if self.who is None:
            return _EVERYONE
        # A named member is more specific than every member of the same scope.
        return _SPECIFICITY[self.who.scope] * 2 + (1 if self.who.match == "*" else 0)


@dataclass(frozen=True, slots=True)
class RouteFacts:
    """What premium rules look at in the request itself."""

    has_tools: bool = False
    opted_in: bool = False  # the premium header was sent
    # the input as the named model's tokenizer counts it (an upper bound), only if asked
    input_tokens: Callable[[str], int] = lambda model: 0


@dataclass(frozen=True, slots=True)
class Decision:
    requested: str  # the name the client sent
    baseline: str  # the model it asked for (after its alias): the counterfactual
    model: str  # the model that serves it
    rule: str | None = None  # the rule that chose `model` (None: asked for by name)
    kind: RouteKind | None = None
    premium: bool = False  # kept a premium model a rewrite rule would have moved
    shadow_rule: str | None = None  # a shadow rule that would have served it differently
    shadow_model: str | None = None  # ... by this model

    @property
    def changed(self) -> bool:
        return self.model != self.baseline


@dataclass(frozen=True, slots=True)
class _Walk:
    model: str
    baseline: str
    rule: Rule | None  # the last rule that moved the request: the one that chose its model
    premium: bool
    shadow: Rule | None  # the first shadow rule that moved it (shadow walks only)


@dataclass(slots=True)
class _Steps:
    model: str = ""
    rule: Rule | None = None
    premium: bool = False
    shadow: Rule | None = None

    def moved(self, rule: Rule, model: str) -> None:
        self.model, self.rule = model, rule
        if rule.shadow and self.shadow is None:
            self.shadow = rule


@dataclass(frozen=True, slots=True)
class _PerModel:
    """What `Router.route` reads budget use from when some budgets are per model."""

    used_bp: Mapping[str, int]
    per_model: Mapping[tuple[str, str], int]


_Use = Mapping[str, int] | _PerModel


def _used(used_bp: _Use, budget: str, model: str, default: int) -> int:
    """How much of ``budget`` the caller has used, in basis points, for a request of
    ``model`` (a ``scope: model`` budget counts each model apart)."""
    if isinstance(used_bp, _PerModel):
        found = used_bp.per_model.get((budget, model))
        return used_bp.used_bp.get(budget, default) if found is None else found
    return used_bp.get(budget, default)


class Router:
    def __init__(
        self,
        rules: Sequence[Rule],
        tiers: Mapping[str, str],
        table: ModelTable,
        premium: Premium | None = None,
    ) -> None:
        self.table = table
        self.tiers = dict(tiers)
        self.premium = premium or Premium()
        self._aliases = sorted(
            (r for r in rules if r.kind is RouteKind.ALIAS), key=lambda r: r.specificity
        )
        self._rewrites = [r for r in rules if r.kind is RouteKind.REWRITE]
        self._downgrades = [r for r in rules if r.kind is RouteKind.DOWNGRADE]
        self._has_shadow = any(r.shadow for r in rules)
        self._has_rules = bool(rules)

    def __bool__(self) -> bool:
        return self._has_rules

    def watched(self, caller: Caller, facts: RouteFacts) -> tuple[str, ...]:
        """The budgets whose use this caller's decision may depend on."""
        names = [r.budget for r in self._downgrades if r.budget and self._may_apply(r, caller)]
        allowance = self.premium.allowance_budget
        if facts.opted_in and allowance and self._rewrites:
            names.append(allowance)
        return tuple(dict.fromkeys(names))

    def _may_apply(self, rule: Rule, caller: Caller) -> bool:
        """Whether ``rule`` may apply to the caller's request: for a ``scope: model`` rule,
        to any model its walk may reach."""
        if rule.who is None or rule.who.scope is not BudgetScope.MODEL:
            return rule.applies_to(caller)
        return any(rule.applies_to(caller, model) for model in self.models_seen(caller.model))

    def route(
        self,
        requested: str,
        dialect: Dialect,
        caller: Caller,
        facts: RouteFacts,
        used_bp: Mapping[str, int],
        per_model: Mapping[tuple[str, str], int] | None = None,
    ) -> Decision:
        """``used_bp``: for each `watched` budget, how much of it the caller's counter has
        spent or reserved, in basis points of its limit. ``per_model``: for a budget of
        ``scope: model``, the same for the counter of each model of `models_seen`, by
        (budget, model): its member is the model a step examines, not the name sent.
        Raises the model table's refusal (`ModelNotFound`, `WrongDialect`) when the name
        resolves to nothing servable."""
        used: _Use = _PerModel(used_bp, per_model) if per_model else used_bp
        enforced = self._walk(requested, dialect, caller, facts, used, with_shadow=False)
        decision = Decision(
            requested=requested,
            baseline=enforced.baseline,
            model=enforced.model,
            rule=enforced.rule.name if enforced.rule else None,
            kind=enforced.rule.kind if enforced.rule else None,
            premium=enforced.premium,
        )
        if not self._has_shadow:
            return decision
        shadowed = self._walk(requested, dialect, caller, facts, used, with_shadow=True)
        if shadowed.model == enforced.model or shadowed.shadow is None:
            return decision
        return dataclasses.replace(
            decision, shadow_rule=shadowed.shadow.name, shadow_model=shadowed.model
        )

    def _walk(
        self,
        requested: str,
        dialect: Dialect,
        caller: Caller,
        facts: RouteFacts,
        used_bp: _Use,
        *,
        with_shadow: bool,
    ) -> _Walk:
        walk = _Steps()
        alias = self._alias(requested, dialect, caller, with_shadow)
        if alias is not None and alias.to is not None:
            walk.moved(alias, alias.to)
        else:
            walk.model = self.table.resolve(requested, dialect).name
        baseline = walk.model
        for rule in self._rewrites:
            if (rule.shadow and not with_shadow) or rule.to is None:
                continue
            if rule.covers(walk.model) and rule.applies_to(caller, walk.model):
                if rule.to == walk.model:
                    break  # already there: the rule chose nothing
                if self._entitled(walk.model, caller, facts, used_bp):
                    walk.premium = True
                    break
                walk.moved(rule, rule.to)
                break
        for rule in self._downgrades:
            if (rule.shadow and not with_shadow) or rule.budget is None:
                continue
            cheaper = self.tiers.get(walk.model)
            if cheaper is None or not rule.covers(walk.model):
                continue
            if not rule.applies_to(caller, walk.model):
                continue
            if _used(used_bp, rule.budget, walk.model, 0) >= rule.at_bp:
                walk.moved(rule, cheaper)
                walk.premium = False  # downgrades protect the budget, premium or not
        return _Walk(
            model=walk.model,
            baseline=baseline,
            rule=walk.rule,
            premium=walk.premium,
            shadow=walk.shadow,
        )

    def _alias(
        self, requested: str, dialect: Dialect, caller: Caller, with_shadow: bool
    ) -> Rule | None:
        other: Rule | None = None
        for rule in self._aliases:  # most specific first
            if rule.alias != requested or (rule.shadow and not with_shadow):
                continue
            if not rule.applies_to(caller) or rule.to is None:
                continue
            target = self.table.get(rule.to)
            if target is not None and target.dialect is dialect:
                return rule
            other = other or rule
        if other is not None and self.table.get(requested) is None and other.to is not None:
            self.table.resolve(other.to, dialect)  # raises WrongDialect, naming the other API
        return None

    def step_down(self, caller: Caller, model: str) -> tuple[str, str] | None:
        """(rule, cheaper model): where a request for ``model`` goes when its budget cannot
        afford it, if an enforced downgrade rule applies to the caller; else None."""
        cheaper = self.tiers.get(model)
        if cheaper is None:
            return None
        for rule in self._downgrades:
            if not rule.shadow and rule.covers(model) and rule.applies_to(caller, model):
                return rule.name, cheaper
        return None

    def models_seen(self, requested: str) -> tuple[str, ...]:
        """Every model a walk for ``requested`` may examine: the name itself, the rules'
        targets and the tiers (the members a ``scope: model`` budget is read for)."""
        names = [requested, *(r.to for r in self._aliases if r.to is not None)]
        names += [r.to for r in self._rewrites if r.to is not None]
        names += [*self.tiers, *self.tiers.values()]
        return tuple(dict.fromkeys(names))

    def aliases(self, caller: Caller, dialect: Dialect) -> dict[str, str]:
        """The alias names this caller may send in ``dialect``, and the model each means."""
        found: dict[str, str] = {}
        for rule in self._aliases:  # most specific first: the first found wins
            if rule.shadow or rule.alias is None or rule.to is None or rule.alias in found:
                continue
            target = self.table.get(rule.to)
            if target is not None and target.dialect is dialect and rule.applies_to(caller):
                found[rule.alias] = rule.to
        return found

    def is_premium(self, model: str) -> bool:
        return any(fnmatchcase(model, p) for p in self.premium.models)

    def _entitled(self, model: str, caller: Caller, facts: RouteFacts, used_bp: _Use) -> bool:
        if not self.is_premium(model):
            return False
        key, premium = caller.key, self.premium
        if key.id in premium.keys or (key.user and key.user in premium.users):
            return True
        if premium.tags.intersection(key.tags):
            return True
        if premium.with_tools and facts.has_tools:
            return True
        if (
            premium.min_input_tokens is not None
            and facts.input_tokens(model) >= premium.min_input_tokens
        ):
            return True
        if facts.opted_in and premium.allowance_budget is not None:
            used = _used(used_bp, premium.allowance_budget, model, BASIS_POINTS)
            return used < BASIS_POINTS
        return False
