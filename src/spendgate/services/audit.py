"""The audit log, and every admin change made through it (`AdminActions`).

The admin API and the CLI make their changes through `AdminActions`, one per principal:
each change checks what the principal may change (`spendgate.domain.roles`: a team
admin, only inside its team; a viewer, nothing), is made, and is written to the audit log
with who, what, when (the injected clock), and from what to what (no secret: a key's hint,
never its secret or hash). The entry is written after the change succeeds; a change that
fails (not found, invalid) leaves no entry.
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from spendgate.domain.audit import AuditAction, AuditEntry, AuditQuery
from spendgate.domain.identity import ApiKey
from spendgate.domain.key_limits import KEY_BUDGET_PREFIX, KeyLimits
from spendgate.domain.loops import LoopBlock
from spendgate.domain.roles import Principal, Role, shared_labels, team_of_budget_member
from spendgate.errors import AccessDenied, InvalidRequest, NotFound
from spendgate.services.keys import IssuedKey, KeyService, KeySpec, KeyUpdate
from spendgate.services.reports import parse_choice
from spendgate.services.tokens import IssuedToken, TokenService, TokenSpec
from spendgate.storage import BudgetOverride, Storage

if TYPE_CHECKING:
    from spendgate.clock import Clock
    from spendgate.domain.roles import AdminToken
    from spendgate.services.views import ServiceViews


def new_entry_id() -> str:
    return "aud_" + secrets.token_hex(8)


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def key_record(key: ApiKey) -> dict[str, Any]:
    """A key as the audit log keeps it: its labels, limits and times; its hint, never its
    secret or hash."""
    return {
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "user": key.user,
        "service": key.service,
        "team": key.team,
        "org": key.org,
        "tags": list(key.tags),
        "allowed_models": list(key.allowed_models),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        **KeyLimits.of(key).to_json(),
    }


def _override_record(override: BudgetOverride | None) -> dict[str, Any] | None:
    if override is None:
        return None
    return {"limit": override.limit, "expires_at": _time(override.expires_at)}


MAX_LIMIT = 100_000


def _moment(value: str | None, param: str) -> datetime | None:
    if value is None:
        return None
    # a '+' of an offset left unescaped in a URL arrives as a space: "09:00 01:00"
    value = re.sub(r" (\d\d:?\d\d)$", r"+\1", value.strip())
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"'{param}' must be an ISO 8601 time", param=param) from None
    if moment.tzinfo is None:
        raise InvalidRequest(f"'{param}' must carry a time zone", param=param)
    return moment


def audit_query(values: Mapping[str, str]) -> AuditQuery:
    """An `AuditQuery` from ``GET /admin/audit``'s parameters (and the CLI's options):
    ``since``, ``until`` (ISO 8601 with a zone), ``actor``, ``action``, ``limit``."""
    action = values.get("action")
    for param in ("action", "actor"):
        if values.get(param) == "":  # not "every one": that is leaving it out
            raise InvalidRequest(f"'{param}' must not be empty", param=param)
    try:
        limit = int(values.get("limit", "1000"))
    except ValueError:
        raise InvalidRequest("limit must be an integer", param="limit") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidRequest(f"limit must be 1 to {MAX_LIMIT}", param="limit")
    since, until = _moment(values.get("since"), "since"), _moment(values.get("until"), "until")
    if since is not None and until is not None and until < since:
        raise InvalidRequest(
            f"'until' ({until.isoformat()}) is before 'since' ({since.isoformat()})",
            param="until",
        )
    return AuditQuery(
        since=since,
        until=until,
        actor=values.get("actor"),
        action=parse_choice(AuditAction, action, "action") if action else None,
        limit=limit,
    )


class AuditService:
    def __init__(self, storage: Storage, clock: Clock) -> None:
        self._storage = storage
        self._clock = clock

    def require(self) -> None:
        """StorageError now, before a change, if this storage keeps no audit log."""
        _ = self._storage.admin

    async def record(
        self,
        principal: Principal,
        action: AuditAction,
        target: str,
        *,
        team: str | None = None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> AuditEntry:
        entry = AuditEntry(
            id=new_entry_id(),
            at=self._clock.now(),
            actor=principal.actor,
            role=principal.role.value,
            action=action,
            target=target,
            team=team,
            before=before,
            after=after,
        )
        await self._storage.admin.audit.append_audit(entry)
        return entry

    async def entries(self, query: AuditQuery, principal: Principal) -> list[AuditEntry]:
        """The entries ``principal`` may see: a team admin's (or team viewer's) only its
        team's, whatever the query asks."""
        if not principal.org_wide:
            query = dataclasses.replace(query, team_only=principal.team or "")
        return await self._storage.admin.audit.audit_entries(query)


class AdminActions:
    """Every admin change, checked against ``principal`` and audited."""

    def __init__(self, views: ServiceViews, principal: Principal) -> None:
        self._views = views
        self._principal = principal
        self._storage = views.storage
        self._clock = views.clock
        self.audit = AuditService(views.storage, views.clock)
        self.keys = KeyService(views.storage, views.config, views.clock)
        self.tokens = TokenService(views.storage, views.config, views.clock)

    def _may_change(self, what: str, team: str | None) -> None:
        if not self._principal.may_change(team):
            raise AccessDenied(self._principal.outside(what, team))
        self.audit.require()

    async def _may_label(self, wanted: set[tuple[str, str]]) -> None:
        """Refuse a team admin a user, service or tag that a key of another team carries
        (`Principal.foreign_label`); revoked keys count: their spend is in the reports."""
        if not wanted or self._principal.role is not Role.TEAM_ADMIN:
            return
        carried: dict[tuple[str, str], set[str | None]] = {}
        for key in await self.keys.list(include_revoked=True):
            for label in shared_labels(key.user, key.service, key.tags):
                carried.setdefault(label, set()).add(key.team)
        refusal = self._principal.foreign_label(wanted, carried)
        if refusal is not None:
            raise AccessDenied(refusal)

    async def _record(self, action: AuditAction, target: str, **fields: Any) -> None:
        await self.audit.record(self._principal, action, target, **fields)

    # -- keys ------------------------------------------------------------------------

    async def create_key(self, spec: KeySpec) -> IssuedKey:
        me = self._principal
        if me.role is Role.TEAM_ADMIN and spec.team is None:
            spec = dataclasses.replace(spec, team=me.team)  # a team admin's keys are its team's
        self._may_change(f"a key of team {spec.team}" if spec.team else "a key", spec.team)
        await self._may_label(shared_labels(spec.user, spec.service, spec.tags))
        issued = await self.keys.create(spec)
        key = issued.key
        await self._record(AuditAction.KEY_CREATE, key.id, team=key.team, after=key_record(key))
        return issued

    async def _key(self, key_id: str) -> ApiKey:
        key = await self.keys.get(key_id)
        self._may_change(f"key {key_id}", key.team)
        return key

    async def update_key(self, key_id: str, update: KeyUpdate) -> ApiKey:
        before = await self._key(key_id)
        if "team" in update.changed:
            self._may_change(f"team {update.team}", update.team)
        wanted = shared_labels(
            update.user if "user" in update.changed else None,
            update.service if "service" in update.changed else None,
            update.tags if "tags" in update.changed else (),
        )  # only what is set now, and only what the key did not already carry
        await self._may_label(wanted - shared_labels(before.user, before.service, before.tags))
        after = await self.keys.update(key_id, update)
        await self._record(
            AuditAction.KEY_UPDATE,
            key_id,
            team=after.team,
            before=key_record(before),
            after=key_record(after),
        )
        return after

    async def revoke_key(self, key_id: str) -> ApiKey:
        before = await self._key(key_id)
        after = await self.keys.revoke(key_id)
        await self._record(
            AuditAction.KEY_REVOKE,
            key_id,
            team=after.team,
            before=key_record(before),
            after=key_record(after),
        )
        return after

    async def rotate_key(self, key_id: str) -> IssuedKey:
        before = await self._key(key_id)
        issued = await self.keys.rotate(key_id)
        await self._record(
            AuditAction.KEY_ROTATE,
            key_id,
            team=issued.key.team,
            before=key_record(before),
            after=key_record(issued.key),
        )
        return issued

    # -- budgets ---------------------------------------------------------------------

    async def budget_team(self, name: str, member: str | None) -> str | None:
        """The team a budget (``member`` None: as a whole) belongs to; NotFound for a budget
        no config or key declares."""
        if name.startswith(KEY_BUDGET_PREFIX):
            key_id = name[len(KEY_BUDGET_PREFIX) :].split(":", 1)[0]
            key = await self._storage.key_by_id(key_id)
            return key.team if key is not None else None
        budget = self._views.budgets.get(name)
        if budget is None:
            known = ", ".join(self._views.budgets.names()) or "none"
            raise NotFound(f"no budget named {name!r} (budgets: {known})", param="name")
        keys = await self._storage.list_keys(include_revoked=True)
        return team_of_budget_member(budget, member, {k.id: k.team for k in keys})

    async def _budget_change(self, name: str, member: str | None) -> str | None:
        team = await self.budget_team(name, member)
        what = f"budget {name}" + (f" (member {member})" if member is not None else "")
        if team is None and self._principal.role is Role.TEAM_ADMIN and member is None:
            what += " as a whole (every member; a team admin may reset its own team's member)"
        self._may_change(what, team)
        return team

    async def _override(self, name: str) -> BudgetOverride | None:
        found = [o for o in await self._storage.overrides(self._clock.now()) if o.budget == name]
        return found[0] if found else None

    async def set_limit(self, name: str, limit: str, expires_at: datetime | None) -> BudgetOverride:
        team = await self._budget_change(name, None)
        before = await self._override(name)
        override = await self._views.budget_service.set_limit(name, limit, expires_at)
        await self._record(
            AuditAction.BUDGET_SET_LIMIT,
            name,
            team=team,
            before={"override": _override_record(before)},
            after={"override": _override_record(override)},
        )
        return override

    async def clear_limit(self, name: str) -> int:
        team = await self._budget_change(name, None)
        before = await self._override(name)
        cleared = await self._views.budget_service.clear_override(name)
        await self._record(
            AuditAction.BUDGET_CLEAR_LIMIT,
            name,
            team=team,
            before={"override": _override_record(before)},
            after={"override": None, "overrides_cleared": cleared},
        )
        return cleared

    async def reset_budget(self, name: str, member: str | None) -> int:
        team = await self._budget_change(name, member)
        views = await self._views.budget_service.overview(name)
        spent = {v.member: v.state.spent for v in views if member is None or v.member == member}
        counters = await self._views.budget_service.reset(name, member)
        await self._record(
            AuditAction.BUDGET_RESET,
            name if member is None else f"{name} (member {member})",
            team=team,
            before={"member": member, "spent": spent},
            after={"member": member, "spent": dict.fromkeys(spent, 0), "counters_reset": counters},
        )
        return counters

    # -- loops -----------------------------------------------------------------------

    async def release_loop(self, loop_id: str) -> LoopBlock:
        found = [b for b in await self._storage.loop_blocks() if b.id == loop_id]
        if found:
            key = await self._storage.key_by_id(found[0].key_id)
            self._may_change(f"loop {loop_id}", key.team if key else None)
        else:
            self._may_change(f"loop {loop_id}", None)  # refused to a team admin, as unknown
        now = self._clock.now()
        block = await self._views.loop_service.release(loop_id)
        key = await self._storage.key_by_id(block.key_id)
        await self._record(
            AuditAction.LOOP_RELEASE,
            loop_id,
            team=key.team if key else None,
            before=block.to_json(now),
            after={"released": True},
        )
        return block

    # -- tokens ----------------------------------------------------------------------

    def _org_admin(self) -> None:
        if self._principal.role is not Role.ORG_ADMIN:
            raise AccessDenied(
                f"Permission denied: {self._principal.actor} is a {self._principal.role.value}; "
                "only an org admin may manage admin tokens."
            )
        self.audit.require()

    async def create_token(self, spec: TokenSpec) -> IssuedToken:
        self._org_admin()
        issued = await self.tokens.create(spec, self._principal)
        await self._record(
            AuditAction.TOKEN_CREATE,
            issued.token.id,
            team=issued.token.team,
            after=_token_record(issued.token, self._clock.now()),
        )
        return issued

    async def revoke_token(self, token_id: str) -> AdminToken:
        self._org_admin()
        before = await self.tokens.get(token_id)
        after = await self.tokens.revoke(token_id)
        now = self._clock.now()
        await self._record(
            AuditAction.TOKEN_REVOKE,
            token_id,
            team=after.team,
            before=_token_record(before, now),
            after=_token_record(after, now),
        )
        return after


def _token_record(token: AdminToken, now: datetime) -> dict[str, Any]:
    return dict(token.to_json(now))
