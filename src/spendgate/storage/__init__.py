"""Storage by role (keys, ledger, counters) behind small protocols; backends are chosen by
URL (`open_storage`) and bound together in one `Storage`."""

from spendgate.storage.base import (
    BudgetOverride,
    CounterStore,
    GroupBy,
    KeyStore,
    Ledger,
    ReservationPlan,
    RetiredKey,
    UsageGroup,
    UsageQuery,
)
from spendgate.storage.open import open_storage, supported_schemes
from spendgate.storage.stores import Storage

__all__ = [
    "BudgetOverride",
    "CounterStore",
    "GroupBy",
    "KeyStore",
    "Ledger",
    "ReservationPlan",
    "RetiredKey",
    "Storage",
    "UsageGroup",
    "UsageQuery",
    "open_storage",
    "supported_schemes",
]
