"""Fixtures shared by the simulator's tests: one simulator per module, SDK clients on it."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from simhttp import Raw

from spendgate.simulator import SimulatorOptions
from spendgate.simulator.thread import SimulatorThread


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorThread]:
    with SimulatorThread(SimulatorOptions()) as running:
        yield running


@pytest.fixture(autouse=True)
def _fresh(sim: SimulatorThread) -> None:
    sim.clear()


@pytest.fixture
def oai(sim: SimulatorThread) -> Iterator[openai.OpenAI]:
    base_url = sim.openai_base_url
    with openai.OpenAI(base_url=base_url, api_key="sk-upstream", max_retries=0) as client:
        yield client


@pytest.fixture
def claude(sim: SimulatorThread) -> Iterator[anthropic.Anthropic]:
    base_url = sim.anthropic_base_url
    with anthropic.Anthropic(base_url=base_url, api_key="sk-ant-up", max_retries=0) as client:
        yield client


@pytest.fixture
def raw(sim: SimulatorThread) -> Raw:
    return Raw(sim)
