"""JSON shapes shared by the admin API and the CLI's --json output."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from spendgate.domain.identity import ApiKey
from spendgate.domain.key_limits import KeyLimits


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
