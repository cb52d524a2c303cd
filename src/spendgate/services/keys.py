"""Issuing and checking virtual keys: one service behind both the CLI and the admin API."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from spendgate.clock import LATEST, Clock, storable
from spendgate.config.schema import Config
from spendgate.domain.identity import (
    KEY_PREFIX,
    ApiKey,
    display_hint,
    generate_secret,
    hash_secret,
    new_key_id,
    provider_shaped,
)
from spendgate.domain.key_limits import KeyLimits, key_budgets
from spendgate.errors import AuthenticationFailed, InvalidRequest, NotFound
from spendgate.storage import Storage
from spendgate.text import unsafe_in

NO_LIMITS = KeyLimits()
MAX_LABEL_LENGTH = 200  # a key's name, user, service, team, each tag and model pattern
REMEMBERED_KEYS = 10_000  # keys a process remembers to start on (`KeyService.remembered`)


@dataclass(frozen=True, slots=True)
class IssuedKey:
    key: ApiKey
    secret: str  # shown once, never stored


@dataclass(frozen=True, slots=True)
class KeySpec:
    name: str
    user: str | None = None
    service: str | None = None
    team: str | None = None
    tags: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] = ()
    expires_at: datetime | None = None
    limits: KeyLimits = NO_LIMITS  # the budget and rate limits the key carries itself


UPDATABLE = ("name", "user", "service", "team", "tags", "allowed_models", "expires_at")
# The key's own budget and limits: fields of `KeyLimits`, by their API names.
LIMIT_FIELDS = {
    "budget_usd": "budget_usd",
    "budget_period": "period",
    "limit_requests": "requests",
    "limit_tokens": "tokens",
}


@dataclass(frozen=True, slots=True)
class KeyUpdate:
    """New labels for a key; only the fields named in ``changed`` change (None clears
    ``user``, ``service``, ``team`` and ``expires_at``; empty tuples clear the lists)."""

    changed: frozenset[str]
    name: str = ""
    user: str | None = None
    service: str | None = None
    team: str | None = None
    tags: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] = ()
    expires_at: datetime | None = None
    limits: KeyLimits = NO_LIMITS  # its fields named in ``changed`` (`LIMIT_FIELDS`) change


class KeyCheck:
    """The stored key, being read again for a request that started on the remembered one
    (`KeyService.remembered`): `fresh` answers it, or raises as `authenticate` does."""

    def __init__(self, reading: asyncio.Future[ApiKey]) -> None:
        self._reading = reading
        reading.add_done_callback(_retrieved)  # a request that never asks: no warning
        self.asked = False

    @property
    def done(self) -> bool:
        """The read has ended: `fresh` answers at once."""
        return self._reading.done()

    async def fresh(self) -> ApiKey:
        self.asked = True
        return await asyncio.shield(self._reading)

    def abandon(self) -> None:
        self._reading.cancel()


def _retrieved(reading: asyncio.Future[ApiKey]) -> None:
    if not reading.cancelled():
        reading.exception()


class KeyService:
    def __init__(self, storage: Storage, config: Config, clock: Clock) -> None:
        self._storage = storage
        self._config = config
        self._clock = clock
        # Keys as last read, by hash, where reading one is a round trip to another server
        # (PostgreSQL): a request starts on the remembered key while it is read again.
        self._remember = bool(getattr(storage.key_store, "remote", False))
        self._seen: dict[str, ApiKey] = {}

    def _check(self, spec: KeySpec) -> None:
        if not spec.name.strip():
            raise InvalidRequest("a key needs a non-empty name", param="name")
        for field, value in _optional_labels(spec):
            if not value.strip():  # "" would be a member of every per-user budget
                raise InvalidRequest(
                    f"{field} must not be empty; leave it out (null) for none", param=field
                )
        for field, value in (("name", spec.name), *_optional_labels(spec)):
            _check_shown(field, value)
        teams = self._config.all_teams()
        if spec.team is not None and teams and spec.team not in teams:
            declared = ", ".join(sorted(teams))
            raise InvalidRequest(
                f"unknown team {spec.team!r}; teams declared under orgs: {declared}",
                param="team",
            )
        if spec.expires_at is not None:
            self._check_expiry(spec.expires_at)
        _check_labels("tags", spec.tags)
        _check_labels("allowed_models", spec.allowed_models)
        _check_limits(spec.limits, self._storage.max_limit)

    def _check_expiry(self, expires_at: datetime) -> None:
        if expires_at.tzinfo is None:
            raise InvalidRequest("expires_at must carry a time zone", param="expires_at")
        now = self._clock.now()
        if expires_at <= now:
            raise InvalidRequest(
                f"expires_at {expires_at.isoformat()} is not in the future (now: "
                f"{now.isoformat()}); a key cannot be created already expired",
                param="expires_at",
            )
        if not storable(expires_at):
            raise InvalidRequest(
                f"expires_at {expires_at.isoformat()} is after {LATEST.isoformat()}, the "
                "latest time spendgate stores; leave it out for a key that never expires",
                param="expires_at",
            )

    async def create(self, spec: KeySpec) -> IssuedKey:
        spec = _stripped(spec)
        self._check(spec)
        secret = generate_secret()
        key = ApiKey(
            id=new_key_id(),
            key_hash=hash_secret(secret),
            hint=display_hint(secret),
            name=spec.name.strip(),
            created_at=_to_ms(self._clock.now()),
            user=spec.user,
            service=spec.service,
            team=spec.team,
            org=self._config.org_of_team(spec.team),
            tags=spec.tags,
            allowed_models=spec.allowed_models,
            expires_at=_to_ms(spec.expires_at) if spec.expires_at else None,
            metadata=spec.limits.metadata({}),
        )
        await self._storage.insert_key(key)
        return IssuedKey(key=key, secret=secret)

    async def update(self, key_id: str, update: KeyUpdate) -> ApiKey:
        """Change a key's labels in place: same id, same secret. Requests from now on are
        counted under the new labels; rows already in the ledger keep the old ones."""
        unknown = update.changed - set(UPDATABLE) - set(LIMIT_FIELDS)
        if unknown:
            raise InvalidRequest(f"cannot update {', '.join(sorted(unknown))}")
        key = await self.get(key_id)
        if key.revoked_at is not None:
            raise InvalidRequest(f"key {key_id!r} is revoked and cannot be updated")
        values = {field: getattr(key, field) for field in UPDATABLE}
        values.update(
            {field: getattr(update, field) for field in update.changed if field in values}
        )
        limits = KeyLimits.of(key)
        changes = {
            LIMIT_FIELDS[field]: getattr(update.limits, LIMIT_FIELDS[field])
            for field in update.changed & set(LIMIT_FIELDS)
        }
        if changes:
            if changes.get("budget_usd", "") is None and "period" not in changes:
                changes["period"] = NO_LIMITS.period  # the budget goes, and its period with it
            limits = dataclasses.replace(limits, **changes)
        spec = _stripped(KeySpec(**values, limits=limits))
        # an expiry already in the past is refused only when it is being set now, and a
        # team no longer declared under orgs (a reload dropped it) only when set now: a
        # rename must not need the team moved first
        checked = spec
        if "expires_at" not in update.changed:
            checked = dataclasses.replace(checked, expires_at=None)
        if "team" not in update.changed:
            checked = dataclasses.replace(checked, team=None)
        self._check(checked)
        updated = dataclasses.replace(
            key,
            name=spec.name.strip(),
            user=spec.user,
            service=spec.service,
            team=spec.team,
            org=self._config.org_of_team(spec.team) if "team" in update.changed else key.org,
            tags=spec.tags,
            allowed_models=spec.allowed_models,
            expires_at=_to_ms(spec.expires_at) if spec.expires_at else None,
            metadata=limits.metadata(key.metadata),
        )
        await self._storage.update_key(updated)
        return updated

    async def _unknown(self, secret: str, hashed: str) -> str:
        """Why a secret no key has is refused: a rotation replaced it, or it never was one."""
        if not secret.startswith(KEY_PREFIX):
            return _unknown_secret(secret)
        retired = await self._storage.retired_key(hashed)
        if retired is None:
            return _unknown_secret(secret)
        key = await self._storage.key_by_id(retired.key_id)
        if key is not None and key.revoked_at is not None:
            return f"This API key ({display_hint(secret)}) has been revoked."
        return (
            f"This API key ({display_hint(secret)}) was rotated at "
            f"{retired.retired_at.isoformat(timespec='seconds')}: its old secret stopped "
            f"working then. Use the new secret of key {retired.key_id} (shown once, by "
            "`spendgate keys rotate`)."
        )

    async def list(self, *, include_revoked: bool = False) -> list[ApiKey]:
        return await self._storage.list_keys(include_revoked=include_revoked)

    async def get(self, key_id: str) -> ApiKey:
        key = await self._storage.key_by_id(key_id)
        if key is None:
            raise NotFound(f"no key with id {key_id!r}", param="key_id")
        return key

    async def revoke(self, key_id: str) -> ApiKey:
        key = await self.get(key_id)
        if key.revoked_at is not None:
            return key
        revoked = dataclasses.replace(key, revoked_at=_to_ms(self._clock.now()))
        await self._storage.update_key(revoked)
        return revoked

    async def rotate(self, key_id: str) -> IssuedKey:
        """A new secret for the same key id and identity; the old secret stops working now."""
        key = await self.get(key_id)
        if key.revoked_at is not None:
            raise InvalidRequest(f"key {key_id!r} is revoked and cannot be rotated")
        if key.expires_at is not None and key.expires_at <= self._clock.now():
            raise InvalidRequest(
                f"key {key_id!r} expired at {key.expires_at.isoformat()} and cannot be "
                "rotated (create a new key)"
            )
        secret = generate_secret()
        rotated = dataclasses.replace(key, key_hash=hash_secret(secret), hint=display_hint(secret))
        await self._storage.update_key(rotated)
        return IssuedKey(key=rotated, secret=secret)

    async def authenticate(self, secret: str | None) -> ApiKey:
        if not secret:
            raise AuthenticationFailed(
                "Missing API key: send your spendgate key as 'Authorization: Bearer "
                f"{KEY_PREFIX}...' or in the 'x-api-key' header."
            )
        hashed = hash_secret(secret)
        try:
            key = await self._stored(secret, hashed)
        except AuthenticationFailed:
            self._seen.pop(hashed, None)
            raise
        if self._remember:
            if hashed not in self._seen and len(self._seen) >= REMEMBERED_KEYS:
                del self._seen[next(iter(self._seen))]  # the first remembered goes first
            self._seen[hashed] = key
        return key

    async def _stored(self, secret: str, hashed: str) -> ApiKey:
        key = await self._storage.key_by_hash(hashed)
        if key is None:
            raise AuthenticationFailed(await self._unknown(secret, hashed))
        now = self._clock.now()
        if key.revoked_at is not None and key.revoked_at <= now:
            raise AuthenticationFailed(f"This API key ({key.hint}) has been revoked.")
        if key.expires_at is not None and key.expires_at <= now:
            raise AuthenticationFailed(f"This API key ({key.hint}) has expired.")
        return key

    def remembered(self, secret: str | None) -> tuple[ApiKey, KeyCheck] | None:
        """The key this secret had when it was last read here, and its reading again from
        storage, started now; None if there is none to start on (`authenticate` then).

        A request may do what reads nothing but memory on the remembered key (read its
        body, route, price, count tokens) while the key is read again, and must have the
        fresh key (`KeyCheck.fresh`) before anything is charged, written or sent on its
        behalf: a counter's spend, a ledger row, an upstream call. Its reservation alone
        may be made meanwhile, held until the read answers and given back if the key is
        refused or changed (`spendgate.pipeline.in_line.reserve_confirmed`). So a key
        revoked, rotated, expired or changed anywhere is refused, or served as it is now,
        exactly as when every request reads it first; the lookup's round trip overlaps
        the request's own work and its reservation instead of preceding them."""
        if not secret or not self._remember:
            return None
        key = self._seen.get(hash_secret(secret))
        if key is None:
            return None
        return key, KeyCheck(asyncio.ensure_future(self.authenticate(secret)))


def _unknown_secret(secret: str) -> str:
    """Why a secret no key has, nor had, is refused, and what to do (never the secret)."""
    provider = provider_shaped(secret)
    if provider is not None:
        return (
            f"Invalid API key: this looks like {provider} API key, not a spendgate key. Use "
            f"a spendgate key ({KEY_PREFIX}...): the gateway holds the provider's key itself."
        )
    if secret.startswith(KEY_PREFIX):
        return (
            "Invalid API key: this gateway does not know it. Check that the whole key was "
            "copied, or ask for a new one."
        )
    return f"Invalid API key: this gateway does not know it (spendgate keys start {KEY_PREFIX})."


def _to_ms(moment: datetime) -> datetime:
    """Storage keeps times to the millisecond (rounding toward the past): the key handed
    back on create or revoke must read the same as the one stored."""
    return moment.replace(microsecond=moment.microsecond - moment.microsecond % 1000)


def _stripped(spec: KeySpec) -> KeySpec:
    """``spec`` with its labels as budgets and reports match them, as its name is: a user
    `` ann`` would be one that no per-user budget or report of ``ann`` counts."""

    def strip(value: str | None) -> str | None:
        return None if value is None else value.strip()

    return dataclasses.replace(
        spec,
        user=strip(spec.user),
        service=strip(spec.service),
        team=strip(spec.team),
        tags=tuple(tag.strip() for tag in spec.tags),
        allowed_models=tuple(pattern.strip() for pattern in spec.allowed_models),
    )


def _optional_labels(spec: KeySpec) -> list[tuple[str, str]]:
    named = (("user", spec.user), ("service", spec.service), ("team", spec.team))
    return [(field, value) for field, value in named if value is not None]


def _check_shown(field: str, value: str) -> None:
    """What reports print back must be plain text of a sane length."""
    if len(value) > MAX_LABEL_LENGTH:
        raise InvalidRequest(
            f"{field} is {len(value)} characters long; at most {MAX_LABEL_LENGTH}", param=field
        )
    found = unsafe_in(value)
    if found is not None:
        raise InvalidRequest(
            f"{field} contains a control or BIDI character ({found}); names must be plain text",
            param=field,
        )


def _check_limits(limits: KeyLimits, ceiling: int) -> None:
    """What `key_budgets` would make of them, checked before they are stored."""
    if limits.budget_usd is None and limits.period != NO_LIMITS.period:
        raise InvalidRequest(
            "budget_period needs budget_usd: the period is that budget's", param="budget_period"
        )
    parts = (
        ("budget_usd", KeyLimits(budget_usd=limits.budget_usd, period=limits.period)),
        ("limit_requests", KeyLimits(requests=limits.requests)),
        ("limit_tokens", KeyLimits(tokens=limits.tokens)),
    )
    for field, part in parts:
        try:
            key_budgets("key_check", part, ceiling=ceiling)
        except ValueError as exc:
            if field == "budget_usd" and "period" in str(exc):
                field = "budget_period"
            raise InvalidRequest(f"{field}: {exc}", param=field) from None


def _check_labels(field: str, values: Iterable[str]) -> None:
    for value in values:
        if not value or not value.strip() or "," in value:
            raise InvalidRequest(
                f"{field} entries must be non-empty and contain no comma", param=field
            )
        _check_shown(field, value)
