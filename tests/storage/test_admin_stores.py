"""Admin tokens and the audit log, on every backend: tokens by hash (never a secret),
revocation kept, audit entries durable across a reopen and filtered as `AuditQuery.matches`
says (the reference every store's filtering must equal)."""

from __future__ import annotations

import dataclasses
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from storage_samples import NOW

from spendgate.clock import ManualClock
from spendgate.domain.audit import AuditAction, AuditEntry, AuditQuery
from spendgate.domain.roles import AdminToken, Role, generate_token, hash_token, token_hint
from spendgate.errors import StorageError
from spendgate.storage import Storage, open_storage


def token(
    name: str = "alice", role: Role = Role.TEAM_ADMIN, team: str | None = "ml"
) -> tuple[AdminToken, str]:
    secret = generate_token()
    return (
        AdminToken(
            id=f"tok_{name}",
            token_hash=hash_token(secret),
            hint=token_hint(secret),
            name=name,
            role=role,
            team=team,
            created_at=NOW,
            created_by="env",
            expires_at=NOW + timedelta(days=30),
        ),
        secret,
    )


def entry(index: int, *, actor: str, action: AuditAction, team: str | None) -> AuditEntry:
    return AuditEntry(
        id=f"aud_{index:04d}",
        at=NOW + timedelta(seconds=index // 3),  # three entries in each second: ties
        actor=actor,
        role="org_admin",
        action=action,
        target=f"key_{index}",
        team=team,
        before={"name": f"old {index}"} if index % 2 else None,
        after={"name": f"new {index}", "tags": ["a", "b"]},
    )


async def test_tokens_by_hash_and_by_id_and_revoked(storage: Storage) -> None:
    stored, secret = token()
    tokens = storage.admin.tokens
    await tokens.insert_token(stored)
    assert await tokens.token_by_hash(hash_token(secret)) == stored
    assert await tokens.token_by_hash(hash_token(secret + "x")) is None
    assert await tokens.token_by_id(stored.id) == stored
    revoked = dataclasses.replace(stored, revoked_at=NOW + timedelta(hours=1))
    await tokens.update_token(revoked)
    assert await tokens.token_by_id(stored.id) == revoked
    other, _ = token("bob", Role.VIEWER, None)
    await tokens.insert_token(dataclasses.replace(other, created_at=NOW + timedelta(seconds=1)))
    assert [t.name for t in await tokens.list_tokens()] == ["alice", "bob"]
    with pytest.raises(StorageError):
        await tokens.update_token(dataclasses.replace(stored, id="tok_missing"))
    with pytest.raises(StorageError):
        await tokens.insert_token(stored)  # its id (and hash) are taken


async def test_audit_filters_equal_the_reference(storage: Storage) -> None:
    rng = random.Random(15)
    actors = ["env", "cli:ops", "token:tok_a (alice)"]
    teams = ["ml", "web", None]
    written = [
        entry(
            i,
            actor=rng.choice(actors),
            action=rng.choice(list(AuditAction)),
            team=rng.choice(teams),
        )
        for i in range(120)
    ]
    for item in written:
        await storage.admin.audit.append_audit(item)
    queries = [
        AuditQuery(),
        AuditQuery(limit=7),
        AuditQuery(since=NOW + timedelta(seconds=10), until=NOW + timedelta(seconds=20)),
        AuditQuery(actor="cli:ops"),
        AuditQuery(action=AuditAction.KEY_CREATE),
        AuditQuery(team_only="ml", actor="env"),
        AuditQuery(team_only="web", since=NOW + timedelta(seconds=5), limit=3),
    ]
    for query in queries:
        expected = [e for e in reversed(written) if query.matches(e)]
        expected.sort(key=lambda e: e.at, reverse=True)  # newest first, later written first
        assert await storage.admin.audit.audit_entries(query) == expected[: query.limit], query


async def test_tokens_and_audit_survive_a_reopen(persistent_url: str, clock: ManualClock) -> None:
    first = open_storage(persistent_url, clock=clock)
    await first.open()
    stored, secret = token()
    await first.admin.tokens.insert_token(stored)
    item = entry(1, actor="env", action=AuditAction.TOKEN_CREATE, team="ml")
    await first.admin.audit.append_audit(item)
    await first.close()
    again = open_storage(persistent_url, clock=clock)
    await again.open()
    try:
        assert await again.admin.tokens.token_by_hash(hash_token(secret)) == stored
        assert await again.admin.audit.audit_entries(AuditQuery()) == [item]
    finally:
        await again.close()


async def test_the_database_never_holds_a_token_secret(tmp_path: Path, clock: ManualClock) -> None:
    db = tmp_path / "spend.db"
    store = open_storage(f"sqlite:///{db}", clock=clock)
    await store.open()
    stored, secret = token()
    await store.admin.tokens.insert_token(stored)
    await store.close()
    data = b"".join(path.read_bytes() for path in tmp_path.iterdir() if path.is_file())
    assert secret.encode() not in data
    assert secret[len("sg-adm-") :].encode() not in data
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT token_hash, hint FROM admin_tokens").fetchall()
    assert rows == [(hash_token(secret), token_hint(secret))]
