"""Helpers for writing PostgreSQL statements."""

from __future__ import annotations


def numbered(sql: str) -> str:
    """A statement with ``?`` placeholders (the SQLite backend's) numbered ``$1, $2, ...``
    for PostgreSQL. The statements converted carry no ``?`` inside string literals."""
    parts = sql.split("?")
    return parts[0] + "".join(f"${i}{part}" for i, part in enumerate(parts[1:], start=1))
