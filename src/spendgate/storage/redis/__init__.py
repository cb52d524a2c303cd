"""Live counters on Redis (``redis://``, ``rediss://``, ``redis+sentinel://``,
``redis+cluster://``): the counter role only; keys and the ledger stay on SQLite or
PostgreSQL (``storage.counters_url``). See `spendgate.storage.redis.counters`."""

from __future__ import annotations

from typing import Any, cast

from spendgate.clock import Clock
from spendgate.errors import StorageError
from spendgate.storage.base import KeyStore, Ledger
from spendgate.storage.redis.connect import SCHEMES
from spendgate.storage.redis.counters import RedisCounters
from spendgate.storage.stores import Storage

__all__ = ["SCHEMES", "RedisCounters", "redis_storage"]


class _CountersOnly:
    """Stands in for the roles Redis does not hold (`Storage.split` takes only counters)."""

    def __getattr__(self, name: str) -> Any:
        raise StorageError(
            "Redis holds live counters only: keys and the ledger need storage.url on "
            "sqlite:// or postgresql://, with storage.counters_url on redis://"
        )


def redis_storage(url: str, clock: Clock) -> Storage:
    counters = RedisCounters(url, clock)
    absent = _CountersOnly()
    return Storage(cast(KeyStore, absent), cast(Ledger, absent), counters, parts=[counters])
