"""The README's quickstart, run as written: its shell blocks, in order, in one fresh bash
whose PATH has no spendgate on it, in a copy of this checkout, with its ``spendgate.yaml``.

Two things differ from a first-time user's shell, neither in the commands: pip installs
the checkout without fetching its dependencies (``PIP_NO_DEPS``; they come from this
environment's site-packages on ``PYTHONPATH``), and the port is a free one instead of
8700. Blocks for programs this machine lacks (``claude``) are skipped, and the test waits
for ``/readyz`` before the block that calls the running gateway.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.MULTILINE | re.DOTALL)
README_PORT = "8700"


def quickstart_blocks(readme: str) -> list[tuple[str, str]]:
    """(language, text) of each fenced block of the Quickstart section, in order."""
    start = readme.index("\n## Quickstart\n")
    end = readme.index("\n## ", start + 1)
    return [(m.group(1), m.group(2)) for m in BLOCK.finditer(readme[start:end])]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def fresh_path() -> str:
    """This PATH without any virtual environment's bin folder (nor this Python's)."""
    ours = {str(Path(sys.executable).parent)}
    kept = [
        entry
        for entry in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep)
        if entry
        and entry not in ours
        and not (Path(entry) / "activate").exists()
        and not (Path(entry) / "spendgate").exists()
    ]
    return os.pathsep.join(kept)


def test_the_readme_has_the_quickstart_this_test_runs() -> None:
    blocks = quickstart_blocks((ROOT / "README.md").read_text(encoding="utf-8"))
    shell = [text for language, text in blocks if language == "sh"]
    assert shell[0].splitlines() == [
        "python3 -m venv .venv && .venv/bin/pip install -e .",
        "source .venv/bin/activate",
    ]
    assert any("spendgate check-config" in text for text in shell)
    assert sum(1 for language, _ in blocks if language == "yaml") == 1


@pytest.mark.slow
def test_the_quickstart_works_as_written_in_a_fresh_shell(tmp_path: Path) -> None:
    if shutil.which("python3", path=fresh_path()) is None:
        pytest.skip("no python3 on the PATH")
    checkout = tmp_path / "spendgate"
    checkout.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, checkout / name)
    shutil.copytree(ROOT / "src", checkout / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    port = str(free_port())
    script = ["set -euo pipefail", f"cd {checkout}", "trap 'kill $(jobs -p) 2>/dev/null' EXIT"]
    for language, text in quickstart_blocks((ROOT / "README.md").read_text(encoding="utf-8")):
        text = text.replace(README_PORT, port)
        if language == "yaml":
            script.append(f"cat > spendgate.yaml <<'YAML'\n{text}YAML")
        elif language == "sh" and "\nclaude\n" not in f"\n{text}":
            if "curl" in text:  # the gateway started in the background: wait until it is up
                script.append(
                    f"for _ in $(seq 100); do curl -sf http://127.0.0.1:{port}/readyz "
                    ">/dev/null && break; sleep 0.1; done"
                )
            script.append(text)
    script.append("echo QUICKSTART-DONE")
    env = {
        "PATH": fresh_path(),
        "HOME": str(tmp_path),
        "PIP_NO_DEPS": "1",
        "PYTHONPATH": sysconfig.get_paths()["purelib"],
    }
    for name in ("PIP_FIND_LINKS", "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_CERT"):
        if name in os.environ:
            env[name] = os.environ[name]
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert out.rstrip().endswith("QUICKSTART-DONE"), out
    assert "spendgate.yaml: OK: 2 providers, 6 models, 3 teams in 1 org," in out
    assert re.search(r"sk-sg-\S+", out), out  # the key, printed once
    assert '"group_by":"team"' in out.replace(" ", "")  # the admin API answered
    assert (checkout / ".venv" / "bin" / "spendgate").exists()
    assert (checkout / "spendgate.db").exists()
