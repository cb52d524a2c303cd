"""Sample keys and ledger rows for the storage tests (a module, so tests can import it)."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from spendgate.domain.identity import ApiKey, display_hint, generate_secret, hash_secret
from spendgate.domain.ledger import LedgerRow

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def build_key(n: int = 0, **fields: Any) -> ApiKey:
    secret = generate_secret()
    key = ApiKey(
        id=f"key_{n:04d}",
        key_hash=hash_secret(secret),
        hint=display_hint(secret),
        name=f"key {n}",
        created_at=NOW - timedelta(days=30) + timedelta(minutes=n),
    )
    return replace(key, **fields)


_request_ids = itertools.count()


def build_row(**fields: Any) -> LedgerRow:
    row = LedgerRow(
        request_id=f"req_{next(_request_ids):08d}",
        ts=NOW,
        surface="openai.chat",
        key_id="key_0000",
        user="ada",
        service="search",
        team="core",
        org="acme",
        tags=(),
        requested_model="gpt-4o",
        served_model="gpt-4o-mini",
        provider="openai",
        input_tokens=100,
        cached_input_tokens=0,
        cache_write_tokens=0,
        output_tokens=50,
        reasoning_tokens=0,
        cost_nanos=1_000,
        status=200,
        latency_ms=120.5,
        ttfb_ms=30.25,
        streamed=False,
        client_disconnected=False,
        usage_estimated=False,
    )
    return replace(row, **fields)
