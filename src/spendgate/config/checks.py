"""Cross-reference checks on a whole config: routing rules, fallbacks and budget shares
(errors), and what ``spendgate check-config`` warns about: budgets, limits, caps and rules
whose ``match`` or ``models`` names nothing declared (`reference_warnings`).

Each message starts with the key path (``routing.rules[2]: ...``) so the loader can report
it as that key of that file, and names the rule it is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from itertools import compress
from operator import attrgetter, not_
from typing import TYPE_CHECKING, Protocol

from spendgate.domain.budgets import BudgetScope
from spendgate.domain.periods import Period
from spendgate.domain.rates import parse_rates
from spendgate.domain.routing import RouteKind

if TYPE_CHECKING:
    from spendgate.config.budgets import BudgetSpec
    from spendgate.config.schema import Config


def check_whole_config(config: Config) -> None:
    """Every cross-reference check that raises (`Config`'s last validator)."""
    check_budget_shares(config)
    check_periods(config)
    check_counters(config)
    check_routing(config)


def check_budget_shares(config: Config) -> None:
    if not any(map(attrgetter("share_of"), config.budgets)):  # in C: 100,000 budgets
        return
    by_name = {budget.name: budget for budget in config.budgets}
    for index, budget in enumerate(config.budgets):
        if budget.share_of is None:
            continue
        parent = by_name.get(budget.share_of)
        where = f"budgets[{index}]"
        if parent is None:
            raise ValueError(
                f"{where}: budget {budget.name!r} is a share of {budget.share_of!r}, "
                "which is not a declared budget"
            )
        if parent.share_of is not None:
            raise ValueError(
                f"{where}: budget {budget.name!r} is a share of {parent.name!r}, which is "
                "itself a share; name a budget with limit_usd or limit_tokens"
            )


def check_periods(config: Config) -> None:
    """A rolling period the pattern lets through but that has no window (longer than
    `MAX_ROLLING_DAYS`): refused here, naming the budget, not on every request."""
    bad: dict[str, str] = {}
    for period in {budget.period for budget in config.budgets}:  # a few distinct ones
        try:
            Period.parse(period)
        except ValueError as exc:
            bad[period] = str(exc)
    for index, budget in enumerate(config.budgets if bad else ()):
        if budget.period in bad:
            raise ValueError(f"budgets[{index}]: budget {budget.name!r}: {bad[budget.period]}")


EXACT_COUNTER = 2**53  # Redis scripts count in doubles: every integer below is exact


def check_counters(config: Config) -> None:
    """Counters on Redis keep integers below 2^53 exactly (docs/storage.md): a budget or a
    rate limit whose limit is beyond that is refused here rather than on its first request
    (where every request it counted was a 503)."""
    url = config.storage.counters_url or ""
    if not url.partition("://")[0].lower().startswith(("redis", "rediss")):
        return
    for index, budget in enumerate(config.budgets):
        if budget.limit_usd is not None and budget.limit_usd * 10**9 >= EXACT_COUNTER:
            raise ValueError(
                f"budgets[{index}]: budget {budget.name!r}: limit_usd {budget.limit_usd} is "
                "beyond what counters on Redis keep exactly (below $9,007,199.25)"
            )
        if budget.limit_tokens is not None and budget.limit_tokens >= EXACT_COUNTER:
            raise ValueError(
                f"budgets[{index}]: budget {budget.name!r}: limit_tokens is beyond what "
                f"counters on Redis keep exactly (below {EXACT_COUNTER:,})"
            )
    for index, limit in enumerate(config.limits):
        for unit, text, scale in (
            ("requests", limit.requests, 1),
            ("tokens", limit.tokens, 1),
            ("usd", limit.usd, 10**9),
        ):
            for rate in parse_rates(text, whole=scale == 1) if text else ():
                if rate.amount * scale >= EXACT_COUNTER:
                    bound = "$9,007,199.25" if scale > 1 else f"{EXACT_COUNTER:,}"
                    raise ValueError(
                        f"limits[{index}]: limit {limit.name!r}: {unit} rate {rate.text!r} is "
                        f"beyond what counters on Redis keep exactly (below {bound})"
                    )


def check_routing(config: Config) -> None:
    _check_fallbacks(config)
    routing = config.routing
    for model, cheaper in routing.tiers.items():
        _known(config, f"routing.tiers.{model}", model, "the tier step")
        _known(config, f"routing.tiers.{model}", cheaper, "the tier step")
        _same_dialect(config, f"routing.tiers.{model}", model, cheaper, "the tier step")
    _check_tier_cycles(config)
    premium = routing.premium
    if premium.allowance_budget and premium.allowance_budget not in _budget_names(config):
        raise ValueError(
            f"routing.premium.allowance_budget: {premium.allowance_budget!r} is not a "
            "declared budget"
        )
    if premium.models and not _matching(config, premium.models):
        raise ValueError(f"routing.premium.models: {premium.models} match no declared model")
    names: dict[str, int] = {}
    aliases: dict[tuple[object, ...], int] = {}
    for index, rule in enumerate(routing.rules):
        where = f"routing.rules[{index}]"
        if rule.name in names:
            raise ValueError(
                f"{where}: rule {rule.name!r} has the same name as "
                f"routing.rules[{names[rule.name]}]"
            )
        names[rule.name] = index
        label = f"rule {rule.name!r}"
        if rule.to is not None:
            _known(config, where, rule.to, label)
        if rule.kind is RouteKind.REWRITE and rule.to is not None:
            for model in _matching(config, rule.models):
                _same_dialect(config, where, model, rule.to, label)
            if not _matching(config, rule.models):
                raise ValueError(
                    f"{where}: {label} applies to models {rule.models}, "
                    "which match no declared model"
                )
        if rule.kind is RouteKind.DOWNGRADE and rule.models and not _matching(config, rule.models):
            raise ValueError(
                f"{where}: {label} applies to models {rule.models}, which match no declared model"
            )
        if rule.kind is RouteKind.ALIAS and rule.to is not None:
            same = (rule.alias, rule.scope, rule.match, config.dialect_of(rule.to), rule.shadow)
            if same in aliases:
                raise ValueError(
                    f"{where}: {label} gives alias {rule.alias!r} to the same callers in the "
                    f"same API dialect as routing.rules[{aliases[same]}]; one of them would "
                    "never apply"
                )
            aliases[same] = index
        if rule.kind is RouteKind.DOWNGRADE:
            if rule.budget not in _budget_names(config):
                raise ValueError(
                    f"{where}: {label} watches budget {rule.budget!r}, which is not a "
                    "declared budget"
                )
            if not routing.tiers:
                raise ValueError(
                    f"{where}: {label} steps down routing.tiers, but no tiers are declared"
                )


def _check_fallbacks(config: Config) -> None:
    for name, model in config.models.items():
        for index, fallback in enumerate(model.fallbacks):
            where = f"models.{name}.fallbacks[{index}]"
            _known(config, where, fallback, f"a fallback of {name!r}")
            if fallback == name:
                raise ValueError(f"{where}: a model cannot fall back to itself")
            _same_dialect(config, where, name, fallback, f"a fallback of {name!r}")
        if all(d.weight == 0 for d in model.resolved_deployments(name)):
            raise ValueError(f"models.{name}.deployments: every weight is 0; give one weight > 0")


def _check_tier_cycles(config: Config) -> None:
    tiers = config.routing.tiers
    for start in tiers:
        seen = {start}
        model = start
        while model in tiers:
            model = tiers[model]
            if model in seen:
                raise ValueError(
                    f"routing.tiers.{start}: the tiers loop back to {model!r}; each step must "
                    "lead to a cheaper model and end"
                )
            seen.add(model)


def _budget_names(config: Config) -> set[str]:
    return {budget.name for budget in config.budgets}


def _matching(config: Config, patterns: list[str]) -> list[str]:
    return [m for m in config.models if any(fnmatchcase(m, p) for p in patterns)]


def _known(config: Config, where: str, model: str, label: str) -> None:
    if model not in config.models:
        known = ", ".join(sorted(config.models)) or "none"
        raise ValueError(
            f"{where}: {label} names model {model!r}, which is not declared under models "
            f"(declared: {known})"
        )


def _same_dialect(config: Config, where: str, model: str, other: str, label: str) -> None:
    if config.dialect_of(model) != config.dialect_of(other):
        raise ValueError(
            f"{where}: {label} would send {model!r} ({config.dialect_of(model)} API) to "
            f"{other!r} ({config.dialect_of(other)} API); routing stays within one API dialect"
        )


# ---------------------------------------------------------------------------- references


@dataclass(frozen=True, slots=True)
class KeyLabels:
    """What the keys in storage carry: the members a user, service, tag or key scope can
    match (teams are declared under ``orgs``; without orgs, keys carry any team)."""

    users: frozenset[str] = frozenset()
    services: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()  # key ids

    def carried(self, scope: BudgetScope) -> frozenset[str]:
        """The members of ``scope`` the keys carry (team, user, service, tag or key)."""
        if scope is BudgetScope.USER:  # first: the scope a long list of budgets is on
            return self.users
        return {
            BudgetScope.TEAM: self.teams,
            BudgetScope.SERVICE: self.services,
            BudgetScope.TAG: self.tags,
            BudgetScope.KEY: self.keys,
        }[scope]


_ON_KEYS = {
    BudgetScope.USER: "user",
    BudgetScope.SERVICE: "service",
    BudgetScope.TAG: "tag",
    BudgetScope.KEY: "key id",
}


UNCHECKED_SHOWN = 20  # entries named in the "not checked" warning, and in that no key carries
NO_KEY = "but no active key in the database"


def reference_warnings(config: Config, labels: KeyLabels | None, unchecked: str = "") -> list[str]:
    """Budgets, limits, request caps and routing rules that can never apply: a ``match``
    naming no declared org, team or model (nor, with ``labels``, any key's user, service,
    tag or id), or a ``models`` glob matching no declared model. ``labels`` None: the keys
    could not be read, and ``unchecked`` says why (once, with what was not checked)."""
    warnings: list[str] = []
    skipped: list[str] = []
    skipped_count = 0
    unmatched = 0  # entries whose member no active key carries
    # (section, index, noun, entry): the key path and the label are written only for a
    # warning, and only the first `UNCHECKED_SHOWN` skipped ones: a config may list 100,000
    bulk = _named_on_keys(config.budgets)
    if bulk is not None:  # 100,000 budgets on users, each named: looked up in C
        found = _members_carried(config.budgets, bulk, labels)
        if labels is None:
            skipped_count = len(found)
            skipped = [f"budgets[{i}] ({bulk[i].value} {config.budgets[i].match!r})"
                       for i in found[:UNCHECKED_SHOWN]]  # fmt: skip
        else:
            unmatched = len(found)
            warnings += [
                f"budgets[{i}]: {_label('budget', config.budgets[i])} matches "
                f"{bulk[i].value} {config.budgets[i].match!r}, "
                f"{_unknown_member(config, bulk[i], config.budgets[i].match, labels, set())}"
                for i in found[:UNCHECKED_SHOWN]
            ]
    listed = () if bulk is not None else config.budgets
    entries: list[tuple[str, int, str, _Matcher]] = [
        *(("budgets", i, "budget", b) for i, b in enumerate(listed)),
        *(("limits", i, "limit", lim) for i, lim in enumerate(config.limits)),
        *(("request_caps", i, "request cap", cap) for i, cap in enumerate(config.request_caps)),
        *(("routing.rules", i, "rule", r) for i, r in enumerate(config.routing.rules)),
    ]
    teams = config.all_teams()  # once: a config may list 100,000 budgets
    for section, index, noun, entry in entries:
        scope, match = entry.scope, entry.match
        for pattern in entry.models:
            if not _matching(config, [pattern]):
                known = ", ".join(sorted(config.models)) or "none"
                warnings.append(
                    f"{section}[{index}]: {_label(noun, entry)}: models pattern {pattern!r} "
                    f"matches no declared model (declared: {known}), so it never applies to any"
                )
        if scope is None or match == "*":
            continue
        problem = _unknown_member(config, scope, match, labels, teams)
        if problem is not None and problem.startswith(NO_KEY):
            unmatched += 1  # named up to `UNCHECKED_SHOWN`, then counted (100,000 budgets)
        if problem is not None and (unmatched <= UNCHECKED_SHOWN or not problem.startswith(NO_KEY)):
            warnings.append(
                f"{section}[{index}]: {_label(noun, entry)} matches {scope.value} {match!r}, "
                f"{problem}"
            )
        elif labels is None and (scope in _ON_KEYS or (scope is BudgetScope.TEAM and not teams)):
            skipped_count += 1
            if len(skipped) < UNCHECKED_SHOWN:
                skipped.append(f"{section}[{index}] ({scope.value} {match!r})")
    if unmatched > UNCHECKED_SHOWN:
        warnings.append(
            f"and {unmatched - UNCHECKED_SHOWN:,} more budgets, limits, caps or rules whose "
            "member no active key in the database carries"
        )
    if skipped and unchecked:
        shown = ", ".join(skipped)
        if skipped_count > len(skipped):  # a config may list 100,000 per-user budgets
            shown += f" and {skipped_count - len(skipped):,} more"
        warnings.append(f"not checked: {shown}: these labels exist only on keys, and {unchecked}")
    return warnings


def _named_on_keys(budgets: Sequence[BudgetSpec]) -> list[BudgetScope] | None:
    """The budgets' scopes, when each budget names one member of a scope only keys carry
    (user, service, tag, key id) and applies to every model; else None. Then whether it
    can apply depends on that member alone."""
    if not budgets or any(map(_MODELS, budgets)):
        return None
    scopes = list(map(_SCOPE, budgets))
    if not set(scopes) <= _ON_KEYS.keys() or WILD in map(_MATCH, budgets):
        return None
    return scopes


def _members_carried(
    budgets: Sequence[BudgetSpec], scopes: list[BudgetScope], labels: KeyLabels | None
) -> list[int]:
    """The positions of the budgets (`_named_on_keys`) whose member no key carries; with
    no ``labels``, of them all (none can be checked)."""
    if labels is None:
        return list(range(len(budgets)))
    if len(set(scopes)) > 1:
        return [
            index
            for index, (budget, scope) in enumerate(zip(budgets, scopes, strict=True))
            if budget.match not in labels.carried(scope)
        ]
    carried = labels.carried(scopes[0])
    missing = map(not_, map(carried.__contains__, map(_MATCH, budgets)))
    return list(compress(range(len(budgets)), missing))


_SCOPE = attrgetter("scope")
_MATCH = attrgetter("match")
_MODELS = attrgetter("models")
WILD = "*"


class _Matcher(Protocol):
    """A budget, limit, request cap or routing rule: who and which models it applies to."""

    @property
    def scope(self) -> BudgetScope | None: ...
    @property
    def match(self) -> str: ...
    @property
    def models(self) -> Sequence[str]: ...


def _label(noun: str, entry: object) -> str:
    """``budget 'ml-monthly'``; a request cap has no name."""
    name = getattr(entry, "name", None)
    return f"{noun} {name!r}" if name is not None else noun


def _unknown_member(
    config: Config, scope: BudgetScope, match: str, labels: KeyLabels | None, teams: set[str]
) -> str | None:
    """Why ``match`` names nobody in ``scope``; None when it may."""
    if scope is BudgetScope.ORG:
        if match in config.orgs:
            return None
        declared = ", ".join(sorted(config.orgs)) or "none"
        return f"which is not declared under orgs (declared: {declared}), so it never applies"
    if scope is BudgetScope.MODEL:
        aliases = {rule.alias for rule in config.routing.rules if rule.alias}
        if match in config.models or match in aliases:
            return None
        known = ", ".join(sorted(config.models)) or "none"
        return f"which is not a declared model (declared: {known}), so it never applies"
    if scope is BudgetScope.TEAM and teams:
        if match in teams:
            return None
        declared = ", ".join(sorted(teams))
        return (
            f"which is not a team declared under orgs (declared: {declared}); keys can only "
            "carry declared teams, so it never applies"
        )
    if labels is None or scope is BudgetScope.SESSION:
        return None
    if match in labels.carried(scope):
        return None
    what = _ON_KEYS.get(scope, scope.value)
    return (
        f"{NO_KEY} carries that {what} (it applies once a key "
        "does; `spendgate keys list` shows them)"
    )
