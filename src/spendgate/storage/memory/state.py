"""What the in-memory stores share: whether the storage is open."""

from __future__ import annotations

from spendgate.errors import StorageError


class State:
    """Opened once, closed once, like a real backend (so tests see the same lifecycle)."""

    def __init__(self) -> None:
        self.opened = False
        self.closed = False

    async def open(self) -> None:
        if self.opened or self.closed:
            raise StorageError("memory storage can be opened only once")
        self.opened = True

    async def close(self) -> None:
        self.closed = True

    def require(self) -> None:
        if not self.opened or self.closed:
            raise StorageError(f"memory storage is {'closed' if self.closed else 'not open'}")
