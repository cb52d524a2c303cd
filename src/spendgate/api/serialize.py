"""JSON shapes shared by the admin API and the CLI's --json output."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from spendgate.domain.identity import ApiKey
from spendgate.domain.key_limits import KeyLimits
from spendgate.errors import InvalidRequest

FORMATS = ("json", "csv")


def wants_csv(query: Mapping[str, str]) -> bool:
    """Whether a report's ``format`` asks for CSV (the default is JSON); any other value is
    a 400 naming it, not JSON given to a script that asked for something else."""
    chosen = query.get("format", "json")
    if chosen not in FORMATS:
        raise InvalidRequest(f"format must be json or csv, not {chosen!r}", param="format")
    return chosen == "csv"


FLAGS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def query_flag(query: Mapping[str, str], name: str) -> bool:
    """A yes/no parameter (``?include_revoked=true``; absent: false). Any other value is a
    400 naming it, not a silent false for ``maybe`` or a misspelt ``ture``."""
    chosen = query.get(name, "false")
    if chosen.lower() not in FLAGS:
        raise InvalidRequest(
            f"{name} must be true or false (or 1/0, yes/no), not {chosen!r}", param=name
        )
    return FLAGS[chosen.lower()]


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def key_json(key: ApiKey, now: datetime) -> dict[str, Any]:
    """A key as shown to operators: never its hash or secret; its state at ``now``."""
    return {
        "id": key.id,
        "name": key.name,
        "hint": key.hint,
        "state": key.state(now),
        "user": key.user,
        "service": key.service,
        "team": key.team,
        "org": key.org,
        "tags": list(key.tags),
        "allowed_models": list(key.allowed_models),
        "created_at": _time(key.created_at),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        **KeyLimits.of(key).to_json(),  # the budget and limits it carries itself
    }
