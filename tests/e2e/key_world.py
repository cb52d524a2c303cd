"""What the tests of a key's life share (test_keys_update.py, test_key_limits.py): a real
gateway on loopback with an injected clock and an admin token, the CLI on the same
database, and the admin API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from e2e.process import http_request, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, GatewayHarness
from spendgate.cli.main import cli
from spendgate.clock import ManualClock

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # the gateway's clock; the CLI's is the real one
ENV = {
    "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
    "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
    "SPENDGATE_CONFIG": None,
    "SPENDGATE_ADMIN_TOKEN": None,
}


@dataclass
class Setup:
    harness: GatewayHarness
    config: Path
    clock: ManualClock
    admin_token: str


def started(factory: pytest.TempPathFactory, name: str, admin_token: str) -> Iterator[Setup]:
    """A module's gateway and the config its CLI reads (the body of a module fixture)."""
    folder = factory.mktemp(name)
    clock = ManualClock(T0)
    harness = GatewayHarness(
        folder / "spendgate.db", env={"SPENDGATE_ADMIN_TOKEN": admin_token}, clock=clock
    ).start()
    try:
        config = write_config(folder, harness.sim.url, db_path=harness.db_path)
        yield Setup(harness, config, clock, admin_token)
    finally:
        harness.stop()


def run(setup: Setup, *args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "-c", str(setup.config)], env=ENV)


def run_json(setup: Setup, *args: str) -> Any:
    result = run(setup, *args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def admin(setup: Setup, method: str, path: str, body: Any = None) -> Any:
    return http_request(method, setup.harness.url + path, body=body, token=setup.admin_token)
