"""Virtual keys and the caller identity they carry. Keys are stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from fnmatch import fnmatchcase

KEY_PREFIX = "sk-sg-"
_SECRET_BYTES = 30
DISPLAY_CHARS = 6


def generate_secret() -> str:
    """A new key secret: recognizable prefix plus 240 random bits."""
    return KEY_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


def hash_secret(secret: str) -> str:
    """Keys carry 240 random bits, so a fast unsalted hash is safe to store and look up."""
    # (surrogateescape: a header that is not UTF-8 still hashes, to a key nobody holds)
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).hexdigest()


def display_hint(secret: str) -> str:
    """What may be shown of a key after creation: prefix and last characters."""
    return f"{KEY_PREFIX}...{secret[-DISPLAY_CHARS:]}"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    key_hash: str
    hint: str
    name: str
    created_at: datetime
    user: str | None = None
    service: str | None = None
    team: str | None = None
    org: str | None = None
    tags: tuple[str, ...] = ()
    allowed_models: tuple[str, ...] = ()
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)

    def is_active(self, now: datetime) -> bool:
        if self.revoked_at is not None and self.revoked_at <= now:
            return False
        return self.expires_at is None or self.expires_at > now

    def may_use(self, model: str) -> bool:
        """An empty allow-list allows every model; entries may be glob patterns."""
        if not self.allowed_models:
            return True
        return any(fnmatchcase(model, pattern) for pattern in self.allowed_models)
