"""Pick a storage backend from a URL, the way `limits` does (``memory://``, ``redis://``).

    sqlite:///spendgate.db          relative path: ./spendgate.db
    sqlite:////var/lib/sg/spend.db  absolute path: /var/lib/sg/spend.db
    memory://                       this process's memory: tests, replays; nothing persists
    redis://host:6379/0?prefix=sg   live counters only (``counters_url``): also rediss://,
                                    redis+sentinel://, redis+cluster:// (docs/storage.md)

The backend comes back unopened: the caller owns its lifecycle (``await storage.open()``
at startup, ``await storage.close()`` at shutdown). Error messages name the URL scheme
but never echo the whole URL, which may carry a password.
"""

from __future__ import annotations

from collections.abc import Callable

from spendgate.clock import Clock, SystemClock
from spendgate.errors import StorageError
from spendgate.storage.stores import Storage


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


def _open_redis(url: str, clock: Clock) -> Storage:
    from spendgate.storage.redis import redis_storage

    return redis_storage(url, clock)


_BACKENDS: dict[str, Callable[[str, Clock], Storage]] = {
    "sqlite": _open_sqlite,
    "memory": _open_memory,
}
# Backends that hold the live counters only (``counters_url``).
_COUNTERS_ONLY: dict[str, Callable[[str, Clock], Storage]] = dict.fromkeys(
    ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"),
    _open_redis,
)


def supported_schemes() -> list[str]:
    return sorted(_BACKENDS)


def open_storage(
    url: str, *, clock: Clock | None = None, counters_url: str | None = None
) -> Storage:
    """The backend for ``url``, not yet opened. ``counters_url``: live counters in another
    system (keys and the ledger stay with ``url``; settlement then runs in two halves)."""
    clock = clock or SystemClock()
    if url.partition("://")[0].lower() in _COUNTERS_ONLY:
        raise StorageError(
            "a Redis URL holds live counters only: set it as storage.counters_url, with "
            "storage.url on the database that keeps keys and the ledger"
        )
    if counters_url is not None and counters_url != url:
        counters = _backend(counters_url, clock, {**_BACKENDS, **_COUNTERS_ONLY})
        return Storage.split(_backend(url, clock, _BACKENDS), counters)
    return _backend(url, clock, _BACKENDS)


def _backend(
    url: str, clock: Clock, backends: dict[str, Callable[[str, Clock], Storage]]
) -> Storage:
    scheme, separator, _ = url.partition("://")
    backend = backends.get(scheme.lower()) if separator else None
    if backend is None:
        shown = scheme if separator else "(none)"
        raise StorageError(
            f"unsupported storage URL scheme {shown!r}; supported: "
            + ", ".join(f"{name}://" for name in sorted(backends))
        )
    return backend(url, clock)
