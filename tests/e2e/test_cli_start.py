"""The CLI starts without the server's weight (docs/benchmarks.md, "CLI start"): ``--help``,
``--version`` and the read-only reports never import aiohttp, uvloop, the tokenizer or the
server, and ``--help``/``--version`` not even the config schema (pydantic), storage or the
gateway. Checked by what ``sys.modules`` holds after the command ran in a fresh
interpreter, not by wall time."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from e2e.process import write_config
from spendgate.cli.main import LAZY, cli

# what serving needs and no report does
SERVER = (
    "aiohttp",
    "uvloop",
    "spendgate.bpe",
    "spendgate.domain.tokens",
    "spendgate.server",
    "spendgate.api",
    "spendgate.pipeline",
    "spendgate.upstream.client",
    "spendgate.dialects",
    "rich",
)
# and what printing help needs none of
HEAVY = (*SERVER, "pydantic", "yaml", "spendgate.config", "spendgate.gateway", "spendgate.storage")

PROBE = """
import json, sys
from spendgate.cli.main import main
sys.argv = ["spendgate", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert exc.code in (0, None), exc.code
import gc
print("\\nGC " + json.dumps([gc.isenabled(), gc.get_freeze_count()]))
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def _probe(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def imported(*args: str) -> set[str]:
    """The modules a fresh ``spendgate ARGS`` had imported when it finished."""
    line = _probe(*args).rsplit("\nMODULES ", 1)[1]
    return set(json.loads(line))


def loaded(modules: set[str], roots: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in roots))


@pytest.mark.parametrize("args", [("--help",), ("--version",), ("-h",)])
def test_help_and_version_import_nothing_heavy(args: tuple[str, ...]) -> None:
    modules = imported(*args)
    assert "click" in modules  # (the probe does see what was imported)
    assert loaded(modules, HEAVY) == []


def test_a_read_only_report_imports_nothing_of_the_server(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    for args in (["usage", "-c", str(config)], ["budgets", "-c", str(config)]):
        modules = imported(*args)
        assert "spendgate.storage.sqlite" in modules  # it did read the database
        assert loaded(modules, SERVER) == [], args


# what only a running gateway builds: a report reads the config and storage, no more
# (`spendgate.cli.common.Workspace`)
GATEWAY = (
    "spendgate.gateway",
    "spendgate.events",
    "spendgate.upstream",
    "spendgate.services.admission_queue",
    "spendgate.services.idle",
    "spendgate.services.leases",
    "spendgate.services.offload",
    "spendgate.services.outage",
    "spendgate.storage.spool",
    "spendgate.storage.memory",  # the other backend
    "spendgate.simulator",
    "spendgate.demo",
)
# and what `usage` needs none of: no other report's service, no budget state
NOT_FOR_USAGE = (
    *SERVER,
    *GATEWAY,
    "spendgate.services.budgets",
    "spendgate.services.keys",
    "spendgate.services.loops",
    "spendgate.services.savings",
    "spendgate.domain.budget_state",
    "spendgate.cli.budgets",
    "spendgate.cli.keys",
    "spendgate.cli.check",
)

REPORTS = (["usage"], ["blocks"], ["savings"], ["budgets"], ["keys", "list"], ["loops"])


def test_usage_reads_config_and_storage_and_nothing_more(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    modules = imported("usage", "-c", str(config))
    assert "spendgate.storage.sqlite" in modules  # it did read the database
    assert "spendgate.config.schema" in modules  # and did validate the config
    assert loaded(modules, NOT_FOR_USAGE) == []


@pytest.mark.parametrize("args", REPORTS, ids=" ".join)
def test_no_report_builds_a_gateway(tmp_path: Path, args: list[str]) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    modules = imported(*args, "-c", str(config))
    assert "spendgate.storage.sqlite" in modules
    assert loaded(modules, GATEWAY) == []


def test_help_lists_every_command_with_its_own_summary() -> None:
    """`spendgate --help` shows the summaries `LAZY` keeps, not the commands' docstrings:
    they must say the same."""
    ctx = cli.make_context("spendgate", ["--help"], resilient_parsing=True)
    for name, (_module, _attribute, summary) in LAZY.items():
        command = cli.get_command(ctx, name)
        assert command is not None
        assert command.get_short_help_str(limit=1_000) == summary, name


def _unpriced_fallback(data: dict[str, Any]) -> None:
    data["models"]["no-price-anywhere"] = {"provider": "openai"}
    data["models"]["gpt-4o"]["fallbacks"] = ["no-price-anywhere"]


def _unknown_key(data: dict[str, Any]) -> None:
    data["storage"]["ulr"] = "sqlite:///typo.db"


BROKEN = [
    (_unknown_key, "storage.ulr: unknown key"),
    (
        _unpriced_fallback,
        "models.gpt-4o.fallbacks[0]: the fallback 'no-price-anywhere' has no price",
    ),
]


@pytest.mark.parametrize(("edit", "problem"), BROKEN, ids=["schema", "prices"])
@pytest.mark.parametrize("args", REPORTS, ids=" ".join)
def test_a_report_refuses_a_broken_config_as_serve_does(
    tmp_path: Path, args: list[str], edit: Any, problem: str
) -> None:
    """The lighter path checks what a gateway's build checks: the schema, and the prices
    routing needs (a fallback no price covers), with the file and key path."""
    config = write_config(tmp_path, "http://127.0.0.1:9", configure=edit)
    before = os.environ.get("PYDANTIC_DISABLE_PLUGINS")
    result = CliRunner().invoke(cli, [*args, "-c", str(config)], env={"SPENDGATE_CONFIG": None})
    assert (result.exit_code, result.stdout) == (1, "")
    assert result.stderr == f"Error: {config}: {problem}\n"
    assert os.environ.get("PYDANTIC_DISABLE_PLUGINS") == before  # as it was


def test_the_program_freezes_its_start_and_collects_after(tmp_path: Path) -> None:
    """`spendgate.cli.common.uncollected`: the program's start runs without the cyclic
    collector and freezes what it made; the collector runs again after it (a `serve` or
    `demo` collects its garbage)."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    out = _probe("usage", "-c", str(config))
    enabled, frozen = json.loads(out.split("\nGC ", 1)[1].split("\n", 1)[0])
    assert enabled is True
    assert frozen > 10_000  # the modules, classes and config of the start


def test_cli_inside_another_process_freezes_nothing(tmp_path: Path) -> None:
    """Run inside a host process (here pytest), the CLI leaves the collector as it found
    it and freezes none of the host's objects (their garbage would be kept for good)."""
    config = write_config(tmp_path, "http://127.0.0.1:9")
    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(cli, ["usage", "-c", str(config)], env={"SPENDGATE_CONFIG": None})
    assert result.exit_code == 0, result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
