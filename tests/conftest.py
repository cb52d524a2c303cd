from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness import GatewayHarness


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    """One running gateway + simulator per test module; tests isolate by using fresh keys."""
    harness = GatewayHarness(tmp_path_factory.mktemp("gw") / "spendgate.db").start()
    try:
        yield harness
    finally:
        harness.stop()
