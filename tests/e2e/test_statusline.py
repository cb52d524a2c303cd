"""The status line against a running gateway (a real ``spendgate serve`` process):
``examples/statusline.sh`` (sh + curl + python3) and ``spendgate statusline`` print the
same line, fed Claude Code's session JSON on stdin; a wrong key and a gateway that is down
each get one sane line and exit status 0."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.process import GatewayProcess, create_key_direct, free_port, write_config
from spendgate.simulator.thread import SimulatorThread

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "statusline.sh"
SESSION = json.dumps({"session_id": "s1", "model": {"display_name": "Opus"}, "cwd": "/tmp"})

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="the script needs curl")


def _env(**extra: str) -> dict[str, str]:
    names = ("SPENDGATE_KEY", "SPENDGATE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY")
    names += ("OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL")
    env = {k: v for k, v in os.environ.items() if k not in names}
    env.update(extra)
    return env


def _script(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sh", str(SCRIPT)], input=SESSION, env=env, capture_output=True, text=True, timeout=20
    )


def _command(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spendgate", "statusline"],
        input=SESSION,
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
    )


def _configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "team-ml", "scope": "team", "match": "ml", "limit_usd": "25", "period": "monthly"}
    ]


def test_the_script_and_the_command_show_the_remaining_budget(tmp_path: Path) -> None:
    with SimulatorThread() as sim:
        config = write_config(tmp_path, sim.url, configure=_configure)
        secret = create_key_direct(config, name="dev", team="ml").secret
        with GatewayProcess(config).start() as gateway:
            with openai.OpenAI(api_key=secret, base_url=gateway.url + "/v1") as client:
                client.chat.completions.create(
                    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
                )
            # as Claude Code sets them: the key and the base URL of the Anthropic SDK
            env = _env(ANTHROPIC_API_KEY=secret, ANTHROPIC_BASE_URL=gateway.url)
            script, command = _script(env), _command(env)
            # as an OpenAI client sets them, with /v1 in the base URL
            openai_env = _env(OPENAI_API_KEY=secret, OPENAI_BASE_URL=gateway.url + "/v1")
            via_openai = _script(openai_env)
            wrong = _script(_env(SPENDGATE_KEY="sk-sg-wrong", SPENDGATE_URL=gateway.url))
            wrong_command = _command(_env(SPENDGATE_KEY="sk-sg-wrong", SPENDGATE_URL=gateway.url))
    assert script.returncode == 0, script.stderr
    assert command.returncode == 0, command.stderr
    line = script.stdout.strip()
    assert line.startswith("sg $24.99 left of $25.00 · team-ml · 0% used"), line
    assert command.stdout.strip() == line
    assert via_openai.stdout.strip() == line
    assert (wrong.stdout.strip(), wrong.returncode) == ("sg: key not accepted", 0)
    assert wrong_command.stdout.strip() == "sg: key not accepted"


def test_a_gateway_that_is_down_gets_one_sane_line(tmp_path: Path) -> None:
    env = _env(SPENDGATE_KEY="sk-sg-any", SPENDGATE_URL=f"http://127.0.0.1:{free_port()}")
    for done in (_script(env), _command(env)):
        assert (done.stdout.strip(), done.returncode) == ("sg: gateway unreachable", 0)
    nokey = _script(_env())
    assert nokey.stdout.strip() == "sg: no key"


@pytest.mark.parametrize("url", ["gateway.example.com:8700", "http://[::1", "not a url"])
def test_a_base_url_that_is_no_url_gets_one_sane_line(url: str) -> None:
    """A base URL set without its scheme (or with a broken host) was a traceback and exit
    status 1 from the command: in a shell prompt or Claude Code's status line."""
    done = _command(_env(SPENDGATE_KEY="sk-sg-any", ANTHROPIC_BASE_URL=url))
    assert (done.stdout.strip(), done.returncode, done.stderr) == (
        "sg: gateway unreachable",
        0,
        "",
    )
