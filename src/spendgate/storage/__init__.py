"""Storage behind a small interface; backends are chosen by URL (`open_storage`)."""

from spendgate.storage.base import GroupBy, Storage, UsageGroup, UsageQuery
from spendgate.storage.open import open_storage, supported_schemes

__all__ = ["GroupBy", "Storage", "UsageGroup", "UsageQuery", "open_storage", "supported_schemes"]
