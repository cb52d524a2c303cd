"""The other worker processes of ``spendgate serve --workers N``, as a worker sees them
(`spendgate.worker.WorkerLink` is the one implementation; a single process has none)."""

from __future__ import annotations

from typing import Protocol


class Fleet(Protocol):
    index: int  # this worker's, 0 to size - 1
    size: int
    metrics_dir: str | None  # prometheus_client's multiprocess directory, shared by all

    async def reload_others(self) -> dict[str, object]:
        """Have every other worker re-read the config file; what each one answered."""
        ...
