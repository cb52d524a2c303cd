"""Storage behind a small interface; backends are chosen by URL (`open_storage`)."""

from spendgate.storage.base import GroupBy, Storage, UsageGroup, UsageQuery

__all__ = ["GroupBy", "Storage", "UsageGroup", "UsageQuery"]
