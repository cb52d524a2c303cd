"""The architecture's size rule, kept by a test (the import rules are contracts that
``make lint`` checks with import-linter: see ``[tool.importlinter]`` in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "spendgate"
MAX_LINES = 600  # split by concept before a module grows past this (STYLE.md)


@pytest.mark.parametrize(
    "module", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE))
)
def test_every_module_is_under_the_size_limit(module: Path) -> None:
    lines = len(module.read_text("utf-8").splitlines())
    assert lines < MAX_LINES, f"{module.relative_to(PACKAGE)} has {lines} lines"


def test_the_walk_finds_the_package() -> None:
    assert (PACKAGE / "gateway.py").is_file()
    assert len(list(PACKAGE.rglob("*.py"))) > 100
