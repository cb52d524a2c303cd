"""Shell completion as docs/cli.md documents it: the installed ``spendgate`` prints a
completion script for bash, zsh and fish, and that script's protocol completes commands
and options (subcommands registered late, such as ``init`` and ``demo``, included)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SPENDGATE = Path(sys.executable).parent / "spendgate"


def _run(env: dict[str, str]) -> str:
    result = subprocess.run(
        [str(SPENDGATE)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_the_documented_commands_are_the_ones_tested() -> None:
    doc = (ROOT / "docs" / "cli.md").read_text()
    documented = set(re.findall(r"_SPENDGATE_COMPLETE=(\w+) spendgate", doc))
    assert documented == {"bash_source", "zsh_source", "fish_source"}


@pytest.mark.parametrize(
    ("shell", "marker"),
    [
        ("bash_source", "complete -o nosort -F _spendgate_completion spendgate"),
        ("zsh_source", "compdef _spendgate_completion spendgate"),
        ("fish_source", "complete --no-files --command spendgate"),
    ],
)
def test_a_completion_script_is_produced(shell: str, marker: str) -> None:
    script = _run({"_SPENDGATE_COMPLETE": shell})
    assert marker in script
    assert "_SPENDGATE_COMPLETE" in script  # it calls back into spendgate for each word


def test_the_script_protocol_completes_commands_and_options() -> None:
    def complete(words: str) -> list[str]:
        cword = str(len(words.split()) - 1)
        out = _run(
            {"_SPENDGATE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": cword}
        )
        return [line.split(",", 1)[1] for line in out.splitlines()]

    assert complete("spendgate ke") == ["keys"]
    assert complete("spendgate in") == ["init"]
    assert set(complete("spendgate keys create --t")) == {"--team", "--tag"}
    assert "--force" in complete("spendgate init --")
