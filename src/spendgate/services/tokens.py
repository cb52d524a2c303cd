"""Admin tokens: created by an org admin (the CLI or ``POST /admin/tokens``), shown once,
stored hashed, listed without secrets, revocable, expiring; and checked on every admin
request (`spendgate.api.auth`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime

from spendgate.clock import LATEST, Clock, storable
from spendgate.config.schema import Config
from spendgate.domain.roles import (
    AdminToken,
    Principal,
    Role,
    generate_token,
    hash_token,
    new_token_id,
    token_hint,
)
from spendgate.errors import AuthenticationFailed, InvalidRequest, NotFound
from spendgate.storage import Storage
from spendgate.text import unsafe_in

MAX_NAME = 200


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: AdminToken
    secret: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class TokenSpec:
    name: str
    role: Role
    team: str | None = None
    expires_at: datetime | None = None


def parse_role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        valid = ", ".join(role.value for role in Role)
        raise InvalidRequest(f"role must be one of {valid}, not {value!r}", param="role") from None


def _to_ms(moment: datetime) -> datetime:
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


class TokenService:
    def __init__(self, storage: Storage, config: Config, clock: Clock) -> None:
        self._storage = storage
        self._config = config
        self._clock = clock

    def _check(self, spec: TokenSpec) -> None:
        name = spec.name.strip()
        if not name or len(name) > MAX_NAME or unsafe_in(name) is not None:
            raise InvalidRequest(
                f"a token needs a name of 1 to {MAX_NAME} plain characters", param="name"
            )
        if spec.role is Role.TEAM_ADMIN and spec.team is None:
            raise InvalidRequest("a team_admin token needs a team", param="team")
        if spec.role is Role.ORG_ADMIN and spec.team is not None:
            raise InvalidRequest("an org_admin token spans every team: give no team", param="team")
        teams = self._config.all_teams()
        if spec.team is not None and teams and spec.team not in teams:
            declared = ", ".join(sorted(teams))
            raise InvalidRequest(
                f"unknown team {spec.team!r}; teams declared under orgs: {declared}",
                param="team",
            )
        if spec.expires_at is not None:
            if spec.expires_at.tzinfo is None:
                raise InvalidRequest("expires_at must carry a time zone", param="expires_at")
            if spec.expires_at <= self._clock.now():
                raise InvalidRequest(
                    f"expires_at {spec.expires_at.isoformat()} is not in the future",
                    param="expires_at",
                )
            if not storable(spec.expires_at):
                raise InvalidRequest(
                    f"expires_at {spec.expires_at.isoformat()} is after "
                    f"{LATEST.isoformat()}, the latest time spendgate stores; leave it out "
                    "for a token that never expires",
                    param="expires_at",
                )

    async def create(self, spec: TokenSpec, by: Principal) -> IssuedToken:
        self._check(spec)
        secret = generate_token()
        token = AdminToken(
            id=new_token_id(),
            token_hash=hash_token(secret),
            hint=token_hint(secret),
            name=spec.name.strip(),
            role=spec.role,
            team=spec.team,
            created_at=_to_ms(self._clock.now()),
            created_by=by.actor,
            expires_at=_to_ms(spec.expires_at) if spec.expires_at else None,
        )
        await self._storage.admin.tokens.insert_token(token)
        return IssuedToken(token, secret)

    async def list(self) -> list[AdminToken]:
        return await self._storage.admin.tokens.list_tokens()

    async def get(self, token_id: str) -> AdminToken:
        token = await self._storage.admin.tokens.token_by_id(token_id)
        if token is None:
            raise NotFound(f"no admin token with id {token_id!r}", param="token_id")
        return token

    async def revoke(self, token_id: str) -> AdminToken:
        token = await self.get(token_id)
        if token.revoked_at is not None:
            return token
        revoked = dataclasses.replace(token, revoked_at=_to_ms(self._clock.now()))
        await self._storage.admin.tokens.update_token(revoked)
        return revoked

    async def authenticate(self, secret: str) -> Principal | None:
        """The principal of a stored token; None if no token has this secret (the caller
        says why it refuses); AuthenticationFailed for a revoked or expired one."""
        token = await self._storage.admin.tokens.token_by_hash(hash_token(secret))
        if token is None:
            return None
        state = token.state(self._clock.now())
        if state != "active":
            what = "been revoked" if state == "revoked" else "expired"
            raise AuthenticationFailed(f"This admin token ({token.hint}, {token.name}) has {what}.")
        return token.principal()
