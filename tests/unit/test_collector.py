"""The cyclic collector while serving (`spendgate.server.tune_collector`)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from spendgate.server import YOUNG_THRESHOLD, tune_collector


@pytest.fixture
def restored_collector() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_collector")
def test_serving_freezes_the_start_and_collects_the_young_generation_less_often() -> None:
    kept = [object() for _ in range(10)], {"a": [1]}
    gc.unfreeze()
    middle, old = gc.get_threshold()[1:]
    tune_collector()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, middle, old)
    assert YOUNG_THRESHOLD > 700  # Python's default, which a request's objects outnumber
    assert gc.get_freeze_count() > 0
    assert not any(obj is kept for obj in gc.get_objects())  # frozen: no collection walks it
