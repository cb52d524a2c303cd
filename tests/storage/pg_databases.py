"""Throwaway PostgreSQL databases for the storage tests, on the server at $PGHOST:$PGPORT
(default 127.0.0.1:5432) as $PGUSER (default root): each test gets ``sg_<uuid>`` and drops
it afterwards (``<prefix>_<uuid>`` with $SPENDGATE_TEST_DATABASE_PREFIX set: a shared server
that allows each user only some names). An unreachable server fails the test: it is
never skipped."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import asyncpg

HOST = os.environ.get("PGHOST", "127.0.0.1")
PORT = int(os.environ.get("PGPORT", "5432"))
USER = os.environ.get("PGUSER", "root")
PREFIX = os.environ.get("SPENDGATE_TEST_DATABASE_PREFIX", "sg")


def url_of(name: str, *, host: str = HOST, port: int = PORT) -> str:
    return f"postgresql://{USER}@{host}:{port}/{name}"


async def _admin(statement: str, host: str, port: int) -> None:
    conn = await asyncpg.connect(url_of("postgres", host=host, port=port), timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def admin(statement: str, *, host: str = HOST, port: int = PORT) -> None:
    """Run ``statement`` on the server's ``postgres`` database, off the test's event loop
    (a fixture may run while pytest-asyncio holds a loop in this thread)."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, _admin(statement, host, port)).result()


@contextmanager
def throwaway_database(*, host: str = HOST, port: int = PORT) -> Iterator[str]:
    """A fresh database's URL, dropped afterwards (connections still open are cut)."""
    name = f"{PREFIX}_{uuid.uuid4().hex}"
    admin(f'CREATE DATABASE "{name}"', host=host, port=port)
    try:
        yield url_of(name, host=host, port=port)
    finally:
        admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', host=host, port=port)
