"""Who may do what on the admin API: roles, principals, admin tokens. Pure.

Three roles:

* ``org_admin``: everything (the environment's admin token is one: the bootstrap credential).
* ``team_admin`` of one team: that team's keys, budgets, spend, loops and audit entries;
  reads are filtered to the team, changes outside it refused.
* ``viewer``: reads only; org-wide, or limited to one team when the token names one.

What a route needs is an `Access` (see there): reads filtered to the principal's team,
org-wide reads, changes (a team admin's only inside its team), or an org admin's alone
(tokens, reload). What belongs to a team is decided here too (`team_of_budget_member`),
so the API and the CLI agree.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from spendgate.domain.budgets import Budget, BudgetScope
from spendgate.domain.key_limits import KEY_BUDGET_PREFIX

TOKEN_PREFIX = "sg-adm-"  # noqa: S105 (a prefix, not a secret)
_SECRET_BYTES = 30
DISPLAY_CHARS = 6
MIN_ADMIN_TOKEN_CHARS = 20  # an environment admin token shorter than this is warned about


def weak_admin_token(token: str | None, env_name: str) -> str | None:
    """A warning when the environment's admin token is short enough to guess."""
    if token and len(token) < MIN_ADMIN_TOKEN_CHARS:
        return (
            f"{env_name} is {len(token)} characters long: an admin token should have at "
            f"least {MIN_ADMIN_TOKEN_CHARS} random characters (e.g. `openssl rand -hex 24`)"
        )
    return None


class Role(StrEnum):
    ORG_ADMIN = "org_admin"
    TEAM_ADMIN = "team_admin"
    VIEWER = "viewer"


class Access(StrEnum):
    """What an admin route needs of its caller. A route that names none gets `READ` for
    GET and `ORG` otherwise (`spendgate.api.auth.guard`): closed to a team's principals
    until it filters by team."""

    READ = "read"  # org-wide data: an org admin or an org-wide viewer (metrics, config)
    TEAM_READ = "team_read"  # anyone; the handler shows only what the principal `sees`
    TEAM_CHANGE = "team_change"  # an org or team admin; the change checks `may_change`
    ORG = "org"  # an org admin only (tokens, reload)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: an admin token's holder, the environment's token, or the CLI."""

    name: str  # the token's name, "env" for the environment's token, "cli:<os user>"
    role: Role
    team: str | None = None  # a team admin's team; a viewer's, if it is limited to one
    token_id: str | None = None  # None: the environment's token or the CLI

    @property
    def actor(self) -> str:
        """How the audit log names it: ``token:<id> (<name>)``, ``env`` or ``cli:<user>``."""
        return f"token:{self.token_id} ({self.name})" if self.token_id else self.name

    @property
    def org_wide(self) -> bool:
        """Sees every team (an org admin, or a viewer without a team)."""
        return self.role is Role.ORG_ADMIN or (self.role is Role.VIEWER and self.team is None)

    def allows(self, access: Access) -> bool:
        if access is Access.TEAM_READ:
            return True
        if access is Access.READ:
            return self.org_wide
        if access is Access.TEAM_CHANGE:
            return self.role in (Role.ORG_ADMIN, Role.TEAM_ADMIN)
        return self.role is Role.ORG_ADMIN

    def refusal(self, access: Access) -> str:
        """Why `allows` said no, for the 403's message."""
        who = f"{self.actor} is a {self.role.value}"
        who += f" of team {self.team}" if self.team else ""
        if self.role is Role.VIEWER and access in (Access.TEAM_CHANGE, Access.ORG):
            return f"Permission denied: {who}, which may read but never change anything."
        if access is Access.READ:
            return f"Permission denied: {who}; this spans every team (org admin or viewer)."
        return f"Permission denied: {who}; only an org admin may do this."

    def sees(self, team: str | None) -> bool:
        """Whether data of ``team`` (None: of no team) is shown to this principal."""
        return self.org_wide or (team is not None and team == self.team)

    def may_change(self, team: str | None) -> bool:
        """Whether this principal may change something that belongs to ``team``."""
        if self.role is Role.ORG_ADMIN:
            return True
        return self.role is Role.TEAM_ADMIN and team is not None and team == self.team

    def outside(self, what: str, team: str | None) -> str:
        """The 403's message when ``what`` (of ``team``) is outside this principal's reach."""
        where = f"team {team}" if team else "no team"
        return (
            f"Permission denied: {what} belongs to {where}; {self.actor} is a "
            f"{self.role.value} of team {self.team} and may change only that team's keys, "
            "budgets and loops."
        )

    def foreign_label(
        self, wanted: set[tuple[str, str]], carried: dict[tuple[str, str], set[str | None]]
    ) -> str | None:
        """The 403's message when a team admin sets a user, service or tag (``wanted``,
        (field, value) pairs) that a key outside its team carries (``carried``: each label's
        teams): per-user, per-service and per-tag budgets and reports span teams, so the
        key would spend another team's budgets and be reported as its spend. None: allowed."""
        if self.role is not Role.TEAM_ADMIN:
            return None
        for field, value in sorted(wanted):
            if carried.get((field, value), set()) - {self.team}:
                return (
                    f"Permission denied: {field} {value!r} is carried by a key outside team "
                    f"{self.team}; {self.actor} is a team_admin of team {self.team} and may "
                    "set only a user, service or tag that no other team's key carries (an "
                    "org admin may set any)."
                )
        return None


# A key's labels that budgets and reports count across teams: a team admin may set one only
# if no key of another team (or of no team) carries it (`Principal.foreign_label`).
SHARED_LABELS = ("user", "service", "tags")


def shared_labels(
    user: str | None, service: str | None, tags: tuple[str, ...]
) -> set[tuple[str, str]]:
    """A key's `SHARED_LABELS` as (field, value) pairs, stripped as keys store them."""
    named = [("user", user), ("service", service), *(("tags", tag) for tag in tags)]
    return {(field, value.strip()) for field, value in named if value is not None}


def team_of_budget_member(
    budget: Budget, member: str | None, key_teams: dict[str, str | None]
) -> str | None:
    """The team one member of a budget belongs to, or None if it spans teams (an org, a
    user, a service, a tag, a model, a session: org-wide data). ``member`` None: the budget
    as a whole (a limit override applies to every member), which belongs to a team only if
    its target is fixed to one team (or one key). ``key_teams``: each key id's team."""
    if budget.name.startswith(KEY_BUDGET_PREFIX):
        key_id = budget.name[len(KEY_BUDGET_PREFIX) :].split(":", 1)[0]
        return key_teams.get(key_id)
    match = budget.target.match
    fixed = member if member is not None else (None if match == "*" else match)
    if fixed is None or (match != "*" and fixed != match):
        return None
    if budget.target.scope is BudgetScope.TEAM:
        return fixed
    if budget.target.scope is BudgetScope.KEY:
        return key_teams.get(fixed)
    return None


# ---------------------------------------------------------------------------- tokens


_DURATION = re.compile(r"^\s*(\d+)\s*([mhdw])\s*$")
_UNITS = {"m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(text: str) -> timedelta:
    """``30d``, ``12h``, ``90m``, ``2w``: how long a token lives (ValueError otherwise)."""
    found = _DURATION.match(text)
    if found is None or int(found.group(1)) == 0:
        raise ValueError(f"{text!r} is not a duration like 30d, 12h, 90m or 2w")
    try:
        return timedelta(**{_UNITS[found.group(2)]: int(found.group(1))})
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any time spendgate stores") from None


def expiry_after(now: datetime, text: str) -> datetime:
    """``now`` plus the duration ``text`` (`parse_duration`); ValueError if that is past
    what a `datetime` holds."""
    duration = parse_duration(text)
    try:
        return now + duration
    except OverflowError:
        raise ValueError(f"{text!r} is longer than any time spendgate stores") from None


def generate_token() -> str:
    """A new admin token: recognizable prefix plus 240 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_token(secret: str) -> str:
    """240 random bits: a fast unsalted hash is safe to store and look up (as for keys)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def token_hint(secret: str) -> str:
    return f"{TOKEN_PREFIX}...{secret[-DISPLAY_CHARS:]}"


def new_token_id() -> str:
    return "tok_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class AdminToken:
    """An admin token as stored: its hash, never its secret."""

    id: str
    token_hash: str
    hint: str
    name: str
    role: Role
    team: str | None
    created_at: datetime
    created_by: str  # the actor that created it
    expires_at: datetime | None = None
    revoked_at: datetime | None = None

    def state(self, now: datetime) -> str:
        """``active``, ``expired`` or ``revoked`` (revoked wins: it was an act)."""
        if self.revoked_at is not None and self.revoked_at <= now:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def principal(self) -> Principal:
        return Principal(self.name, self.role, self.team, self.id)

    def to_json(self, now: datetime) -> dict[str, object]:
        """As listed: never the hash or the secret."""
        return {
            "id": self.id,
            "name": self.name,
            "hint": self.hint,
            "role": self.role.value,
            "team": self.team,
            "state": self.state(now),
            "created_at": self.created_at.isoformat(),
            "created_by": self.created_by,
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }
