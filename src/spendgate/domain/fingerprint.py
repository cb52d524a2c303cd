"""The fingerprint of a request's content, for loop detection: the same model, messages
or input, tools... sent again, however it is delivered. Pure."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

# Fields that change between two sends of the same logical request.
VOLATILE = frozenset(
    {"stream", "stream_options", "metadata", "user", "store", "prompt_cache_key", "service_tier"}
)


def fingerprint(body: Mapping[str, Any]) -> str:
    """Of the request's content (model, messages or input, tools...), not its delivery."""
    content = {name: value for name, value in body.items() if name not in VOLATILE}
    return hashlib.blake2b(orjson.dumps(content), digest_size=12).hexdigest()
