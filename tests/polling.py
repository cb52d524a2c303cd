"""Waiting for a state in tests that drive real processes: a bound, never a delay."""

from __future__ import annotations

import time
from collections.abc import Callable


def until(
    check: Callable[[], bool],
    what: str,
    limit_s: float = 30.0,
    explain: Callable[[], object] = lambda: "",
) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` (and ``explain()``) after
    ``limit_s``. The limit bounds a broken run; a passing run waits only for the state."""
    deadline = time.monotonic() + limit_s
    while not check():
        assert time.monotonic() < deadline, f"never: {what} {explain()}"
        time.sleep(0.05)
