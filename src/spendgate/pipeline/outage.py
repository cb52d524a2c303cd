"""The storage outage policy, in one place: fail closed.

When storage cannot take a write that must precede a provider call (a reservation, a block
row) or answer a read that decides one (a key, a counter), the request is refused with a
`StorageUnavailable` (503, in the caller's dialect, ``retry-after`` a few seconds), never
forwarded unmetered. Admin and report endpoints answer the same way. The error itself is
logged once, where it is caught (`spendgate.api.errors`).
"""

from __future__ import annotations

from spendgate.errors import StorageUnavailable

RETRY_AFTER_S = 5.0


def storage_refusal() -> StorageUnavailable:
    return StorageUnavailable(
        "spendgate cannot record requests right now (its storage is failing), so it "
        "refuses them rather than send them to the provider unmetered. Retry shortly; "
        "the operator has been told in the gateway's log.",
        wait_s=RETRY_AFTER_S,
    )
