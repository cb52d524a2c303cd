"""Keys in memory: a dict by id and an index by hash."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from spendgate.clock import Clock, from_ms, to_ms
from spendgate.domain.identity import ApiKey
from spendgate.errors import StorageError
from spendgate.storage.base import RetiredKey
from spendgate.storage.memory.state import State


def _ms(moment: datetime | None) -> datetime | None:
    return None if moment is None else from_ms(to_ms(moment))


def stored(key: ApiKey) -> ApiKey:
    """The key as a database would give it back: times to the millisecond, in UTC."""
    created = _ms(key.created_at)
    assert created is not None
    return dataclasses.replace(
        key,
        created_at=created,
        expires_at=_ms(key.expires_at),
        revoked_at=_ms(key.revoked_at),
        metadata=dict(key.metadata),
    )


class MemoryKeys:
    def __init__(self, state: State, clock: Clock) -> None:
        self._state = state
        self._clock = clock
        self._by_id: dict[str, ApiKey] = {}
        self._by_hash: dict[str, str] = {}
        self._retired: dict[str, RetiredKey] = {}

    async def insert_key(self, key: ApiKey) -> None:
        self._state.require()
        if key.id in self._by_id:
            raise StorageError(f"cannot store key {key.id!r}: its id is taken")
        if key.key_hash in self._by_hash:
            raise StorageError(f"cannot store key {key.id!r}: its hash is taken")
        self._by_id[key.id] = stored(key)
        self._by_hash[key.key_hash] = key.id

    async def update_key(self, key: ApiKey) -> None:
        self._state.require()
        old = self._by_id.get(key.id)
        if old is None:
            raise StorageError(f"cannot store key {key.id!r}: it does not exist")
        owner = self._by_hash.get(key.key_hash)
        if owner is not None and owner != key.id:
            raise StorageError(f"cannot store key {key.id!r}: its hash is taken")
        del self._by_hash[old.key_hash]
        if old.key_hash != key.key_hash:
            self._retired[old.key_hash] = RetiredKey(key.id, from_ms(to_ms(self._clock.now())))
        self._by_id[key.id] = stored(key)
        self._by_hash[key.key_hash] = key.id

    async def key_by_hash(self, key_hash: str) -> ApiKey | None:
        self._state.require()
        key_id = self._by_hash.get(key_hash)
        return None if key_id is None else self._by_id[key_id]

    async def retired_key(self, key_hash: str) -> RetiredKey | None:
        self._state.require()
        return self._retired.get(key_hash)

    async def key_by_id(self, key_id: str) -> ApiKey | None:
        self._state.require()
        return self._by_id.get(key_id)

    async def list_keys(self, *, include_revoked: bool = False) -> list[ApiKey]:
        self._state.require()
        now = self._clock.now()
        keys = sorted(self._by_id.values(), key=lambda k: (k.created_at, k.id))
        if include_revoked:
            return keys
        return [k for k in keys if k.revoked_at is None or k.revoked_at > now]

    async def check(self) -> None:
        self._state.require()
