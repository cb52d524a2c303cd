"""Pick a storage backend from a URL, the way `limits` does (``memory://``, ``redis://``).

    sqlite:///spendgate.db          relative path: ./spendgate.db
    sqlite:////var/lib/sg/spend.db  absolute path: /var/lib/sg/spend.db
    memory://                       this process's memory: tests, replays; nothing persists
    postgresql://user@host:5432/db  PostgreSQL (also postgres://): every role, shared by
                                    every gateway on the database (libpq URL syntax)
    redis://host:6379/0?prefix=sg   live counters only (``counters_url``): also rediss://,
                                    redis+sentinel://, redis+cluster:// (docs/storage.md)

The backend comes back unopened: the caller owns its lifecycle (``await storage.open()``
at startup, ``await storage.close()`` at shutdown). Error messages name the URL scheme
but never echo the whole URL, which may carry a password.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from spendgate.clock import Clock, SystemClock
from spendgate.config.storage import StorageConfig
from spendgate.errors import StorageError
from spendgate.storage.stores import Storage

if TYPE_CHECKING:
    from spendgate.storage.postgres.settings import PostgresSettings


def _open_sqlite(url: str, clock: Clock) -> Storage:
    rest = url.partition("://")[2]
    if rest in ("", ":memory:"):
        raise StorageError(
            "in-memory SQLite is not supported: the writer thread and the readers need one "
            "shared file; use a file in a temporary directory, or memory:// for a store "
            "that lives in this process only"
        )
    path = rest.removeprefix("/")
    if path == rest or not path or "?" in path:
        raise StorageError(
            "a SQLite URL names a file and takes no host or query: "
            "sqlite:///relative.db or sqlite:////absolute.db"
        )
    from spendgate.storage.sqlite import SqliteStorage  # each backend when used (CLI start)

    return SqliteStorage(path, clock=clock)


def _open_memory(url: str, clock: Clock) -> Storage:
    if url.partition("://")[2] not in ("", "/"):
        raise StorageError("a memory URL takes nothing after the scheme: memory://")
    from spendgate.storage.memory import memory_storage

    return memory_storage(clock)


def _open_redis(url: str, clock: Clock, config: StorageConfig | None) -> Storage:
    from spendgate.storage.redis import redis_storage

    return redis_storage(url, clock)


def _open_postgres(url: str, clock: Clock, config: StorageConfig | None) -> Storage:
    rest = url.partition("://")[2]
    if not rest or rest.startswith("?"):
        raise StorageError("a PostgreSQL URL names a server: postgresql://user@host:5432/db")
    from spendgate.storage.postgres import PostgresStorage

    return PostgresStorage(url, clock=clock, settings=postgres_settings(config))


def postgres_settings(config: StorageConfig | None) -> PostgresSettings:
    """The PostgreSQL backend's settings from the ``storage:`` section (defaults: none)."""
    from spendgate.storage.postgres.settings import PostgresSettings

    if config is None:
        return PostgresSettings()
    pg = config.postgres
    return PostgresSettings(
        pool_min=pg.pool_min_size,
        pool_max=pg.pool_max_size,
        connect_timeout_s=pg.connect_timeout_s,
        statement_timeout_s=pg.statement_timeout_s,
        partitions_ahead=pg.partitions_ahead,
        retention_months=pg.retention_months,
        synchronous_commit=pg.synchronous_commit,
    )


Opener = Callable[[str, Clock, StorageConfig | None], Storage]
_BACKENDS: dict[str, Opener] = {
    "sqlite": lambda url, clock, _: _open_sqlite(url, clock),
    "memory": lambda url, clock, _: _open_memory(url, clock),
    "postgresql": _open_postgres,
    "postgres": _open_postgres,
}
# Backends that hold the live counters only (``counters_url``).
_COUNTERS_ONLY: dict[str, Opener] = dict.fromkeys(
    ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"),
    _open_redis,
)


def supported_schemes() -> list[str]:
    return sorted(_BACKENDS)


def open_storage(
    url: str,
    *,
    clock: Clock | None = None,
    counters_url: str | None = None,
    config: StorageConfig | None = None,
) -> Storage:
    """The backend for ``url``, not yet opened. ``counters_url``: live counters in another
    system (keys and the ledger stay with ``url``; settlement then runs in two halves).
    ``config``: the ``storage:`` section, for a backend's own settings (pool sizes...)."""
    clock = clock or SystemClock()
    if config is not None and counters_url is None:
        counters_url = config.counters_url
    if url.partition("://")[0].lower() in _COUNTERS_ONLY:
        raise StorageError(
            "a Redis URL holds live counters only: set it as storage.counters_url, with "
            "storage.url on the database that keeps keys and the ledger"
        )
    if counters_url is not None and counters_url != url:
        counters = _backend(counters_url, clock, config, {**_BACKENDS, **_COUNTERS_ONLY})
        return Storage.split(_backend(url, clock, config, _BACKENDS), counters)
    return _backend(url, clock, config, _BACKENDS)


def _backend(
    url: str, clock: Clock, config: StorageConfig | None, backends: dict[str, Opener]
) -> Storage:
    scheme, separator, _ = url.partition("://")
    backend = backends.get(scheme.lower()) if separator else None
    if backend is None:
        shown = scheme if separator else "(none)"
        raise StorageError(
            f"unsupported storage URL scheme {shown!r}; supported: "
            + ", ".join(f"{name}://" for name in sorted(backends))
        )
    return backend(url, clock, config)
