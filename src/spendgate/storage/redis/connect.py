"""Redis URLs and the clients they make, and the Lua scripts the counter store runs.

    redis://[:password@]host:port/db?prefix=sg       one server (or a primary)
    rediss://...                                      the same over TLS
    redis+sentinel://[:password@]host:port[,host:port...]/service[/db]?prefix=sg
                                                      the primary that Sentinel names
    redis+cluster://[:password@]host:port?prefix=sg   Redis Cluster (any node to start)
    rediss+cluster://...                              Redis Cluster over TLS

``prefix`` (default ``spendgate``) names the hash tag of every key: all the keys of one
deployment live in one hash slot, so a decision touching any of them is one script on
one node (docs/scaling.md has the argument and what to do past one node). Other query
parameters go to redis-py (``socket_timeout=0.5``, ``health_check_interval=...``).

Scripts are loaded with ``SCRIPT LOAD`` when the store opens, run with ``EVALSHA`` and
loaded again when the server answers ``NOSCRIPT`` (a restart, a failover to a replica
that never saw them, ``SCRIPT FLUSH``). Their file names carry a version
(``reserve_v2.lua``): a change of arguments or behaviour is a new file, so gateways of two
versions sharing a server never run each other's script under one name (each loads those
of its own install; during a rolling upgrade a ``reserve_v1`` gateway and a ``reserve_v2``
one share counters and reservations: both scripts read and write them alike).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import NoScriptError

from spendgate.errors import StorageError

SCHEMES = (
    "redis",
    "rediss",
    "redis+sentinel",
    "rediss+sentinel",
    "redis+cluster",
    "rediss+cluster",
)
DEFAULT_PREFIX = "spendgate"
# Fail fast (the outage policy answers while Redis does not), and bound the connections of
# one gateway process: past the bound, callers wait for one (up to the pool timeout).
_TIMEOUTS = {"socket_timeout": "2", "socket_connect_timeout": "2", "max_connections": "64"}
# Each script by the file it is in: a script whose arguments or behaviour change gets a new
# file (``reserve_v2``; the version before's are in tests/storage/scripts_before/).
SCRIPTS = {
    "reserve": "reserve_v2",
    "prune": "prune_v1",
    "settle": "settle_v1",
    "charge": "charge_v2",
    "forget": "forget_v1",
    "renew": "renew_v1",
    "lapsed": "lapsed_v1",
    "unwritten": "unwritten_v1",
    "states": "states_v1",
    "maintain": "maintain_v1",
    "override": "override_v1",
}
PRELUDE = "common_v1"  # prepended to every script


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    url: str  # what redis-py gets (no prefix, no +sentinel/+cluster)
    prefix: str
    sentinels: tuple[tuple[str, int], ...] = ()
    service: str = ""


def parse(url: str) -> Target:
    """Split a counters URL; errors name the scheme only (the URL may hold a password)."""
    scheme = url.partition("://")[0].lower()
    if scheme not in SCHEMES:
        raise StorageError(f"not a Redis URL scheme: {scheme!r}")
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    prefix = query.pop("prefix", DEFAULT_PREFIX)
    if not prefix or any(c in prefix for c in "{}"):
        raise StorageError("a Redis URL's prefix must be non-empty, without braces")
    for name, value in _TIMEOUTS.items():
        query.setdefault(name, value)
    base = "rediss" if scheme.startswith("rediss") else "redis"
    if scheme.endswith("+sentinel"):
        hosts = parts.netloc.rpartition("@")[2]
        path = [p for p in parts.path.split("/") if p]
        if not hosts or not path:
            raise StorageError(
                "a Sentinel URL names its sentinels and the service: "
                "redis+sentinel://host:26379[,host:26379]/service[/db]"
            )
        sentinels = []
        for item in hosts.split(","):
            host, _, port = item.rpartition(":")
            sentinels.append((host or item, int(port) if host else 26379))
        auth = parts.netloc.rpartition("@")[0]
        db = path[1] if len(path) > 1 else "0"
        rest = f"{base}://{auth + '@' if auth else ''}localhost/{db}?{urlencode(query)}"
        return Target(scheme, rest, prefix, tuple(sentinels), unquote(path[0]))
    plain = parts._replace(scheme=base, query=urlencode(query)).geturl()
    return Target(scheme, plain, prefix)


class _WaitingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """Sentinel's pool (the primary's address asked of the sentinels) that waits for a free
    connection past ``max_connections``, as a plain URL's pool does, instead of failing the
    caller with "Too many connections" (redis-py's `SentinelConnectionPool` does not wait)."""


def client(target: Target) -> Any:
    """The asyncio client for a target (a Redis, a RedisCluster or Sentinel's primary)."""
    if target.scheme.endswith("+cluster"):
        return RedisCluster.from_url(target.url)
    if target.scheme.endswith("+sentinel"):
        options = aioredis.connection.parse_url(target.url)
        options.pop("host", None)
        options.pop("port", None)
        sentinel = Sentinel(list(target.sentinels), **options)
        return sentinel.master_for(target.service, connection_pool_class=_WaitingSentinelPool)
    pool = aioredis.BlockingConnectionPool.from_url(target.url)  # waits for a connection
    return aioredis.Redis.from_pool(pool)  # closing the client closes the pool


async def close(redis: Any) -> None:
    """Close a client of `client`, and for Sentinel its connections to the sentinels (the
    primary's client does not own them: left open, they outlive the event loop)."""
    manager = getattr(getattr(redis, "connection_pool", None), "sentinel_manager", None)
    await redis.aclose()
    if manager is not None:
        await manager.aclose()


def _text(file: str) -> str:
    package = resources.files("spendgate.storage.redis")
    common = package.joinpath(f"{PRELUDE}.lua").read_text()
    return common + "\n" + package.joinpath(f"{file}.lua").read_text()


class Scripts:
    """The counter store's Lua scripts: SCRIPT LOAD once, EVALSHA, reload on NOSCRIPT."""

    def __init__(self) -> None:
        self.text = {name: _text(file) for name, file in SCRIPTS.items()}
        self.sha = {name: hashlib.sha1(t.encode()).hexdigest() for name, t in self.text.items()}  # noqa: S324

    async def load(self, redis: Any) -> None:
        for name, text in self.text.items():
            await self._load_one(redis, name, text)

    async def _load_one(self, redis: Any, name: str, text: str) -> None:
        sha = await redis.script_load(text)  # a cluster loads it on every primary
        if sha != self.sha[name]:  # pragma: no cover - a server that hashes otherwise
            raise StorageError(f"Redis answered SCRIPT LOAD of {name} with an unexpected sha")

    async def run(self, redis: Any, name: str, keys: list[str], args: list[Any]) -> Any:
        try:
            return await redis.evalsha(self.sha[name], len(keys), *keys, *args)
        except NoScriptError:
            await self._load_one(redis, name, self.text[name])
            return await redis.evalsha(self.sha[name], len(keys), *keys, *args)
