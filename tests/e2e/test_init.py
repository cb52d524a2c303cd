"""``spendgate init``: a commented starter config for the provider keys set in the
environment, which ``check-config`` accepts and ``serve`` would build, naming each key's
variable and never writing a secret; an existing file is kept unless ``--force``."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner, Result

from spendgate.cli.main import cli
from spendgate.config import load_config
from spendgate.gateway import build_gateway

SECRETS = {
    "OPENAI_API_KEY": "sk-openai-SECRET-1111",
    "ANTHROPIC_API_KEY": "sk-ant-SECRET-2222",
    "GEMINI_API_KEY": "gemini-SECRET-3333",
    "GOOGLE_API_KEY": "google-SECRET-4444",
    "AZURE_OPENAI_API_KEY": "azure-SECRET-5555",
    "OPENROUTER_API_KEY": "sk-or-SECRET-6666",
}
ENDPOINT = "https://acme-east.openai.azure.com/"
ALL_VARS = [*SECRETS, "AZURE_OPENAI_ENDPOINT", "SPENDGATE_CONFIG", "SPENDGATE_ADMIN_TOKEN"]


def run(args: list[str], env: dict[str, str]) -> Result:
    clean: dict[str, str | None] = dict.fromkeys(ALL_VARS)
    clean.update(env)
    return CliRunner().invoke(cli, args, env=clean, catch_exceptions=False)


def env_for(*names: str) -> dict[str, str]:
    env = {name: SECRETS[name] for name in names if name in SECRETS}
    if "AZURE_OPENAI_ENDPOINT" in names:
        env["AZURE_OPENAI_ENDPOINT"] = ENDPOINT
    return env


CASES = [
    (("OPENAI_API_KEY",), {"openai": "OPENAI_API_KEY"}),
    (("ANTHROPIC_API_KEY",), {"anthropic": "ANTHROPIC_API_KEY"}),
    (("GOOGLE_API_KEY",), {"gemini": "GOOGLE_API_KEY"}),
    (("GEMINI_API_KEY", "GOOGLE_API_KEY"), {"gemini": "GEMINI_API_KEY"}),
    (("AZURE_OPENAI_API_KEY", "AZURE_OPENAI_ENDPOINT"), {"azure": "AZURE_OPENAI_API_KEY"}),
    (("AZURE_OPENAI_API_KEY",), {"openai": "OPENAI_API_KEY"}),  # no endpoint: no Azure
    (
        ("OPENROUTER_API_KEY", "ANTHROPIC_API_KEY"),
        {"anthropic": "ANTHROPIC_API_KEY", "openrouter": "OPENROUTER_API_KEY"},
    ),
    ((), {"openai": "OPENAI_API_KEY"}),  # nothing set: OpenAI, its key still to set
    (
        (*SECRETS, "AZURE_OPENAI_ENDPOINT"),
        {
            "openai": "OPENAI_API_KEY",
            "anthropic": "ANTHROPIC_API_KEY",
            "gemini": "GEMINI_API_KEY",
            "azure": "AZURE_OPENAI_API_KEY",
            "openrouter": "OPENROUTER_API_KEY",
        },
    ),
]


@pytest.mark.parametrize(("names", "expected"), CASES)
def test_init_writes_a_config_check_config_accepts(
    tmp_path: Path, names: tuple[str, ...], expected: dict[str, str]
) -> None:
    env = env_for(*names)
    path = tmp_path / "spendgate.yaml"
    result = run(["init", "-c", str(path)], env)
    assert result.exit_code == 0, result.output
    text = path.read_text()
    for secret in SECRETS.values():
        assert secret not in text
        assert secret not in result.output
    data = yaml.safe_load(text)
    providers = {name: spec["api_key_env"] for name, spec in data["providers"].items()}
    assert providers == expected
    if "azure" in expected:
        azure = data["providers"]["azure"]
        assert azure["base_url"] == "https://acme-east.openai.azure.com/openai/v1"
        assert azure["auth"] == "api-key"
    assert "# budgets:" in text  # the budget example, commented

    checked = run(["check-config", "-c", str(path)], env)
    assert checked.exit_code == 0, checked.output
    assert "OK:" in checked.output
    assert "no price" not in checked.output
    # What `serve` builds from it, the secrets required, when the keys are set.
    full_env = {**env, **{var: "set" for var in expected.values()}}
    gateway = build_gateway(load_config(path), source=str(path), env=full_env, require_secrets=True)
    assert set(gateway.config.providers) == set(expected)
    assert all(gateway.config.models), "no models"

    # Its commented budgets and limits, uncommented as the comment invites, check clean:
    # the budget on "the dearest models" names models this file declares (it named Claude,
    # GPT and Gemini models whatever the file declared: "matches no declared model").
    head, _, examples = text.partition("\n# budgets:")
    uncommented = head + re.sub(r"(?m)^# ((?:limits):|  .*)$", r"\1", "\nbudgets:" + examples)
    assert uncommented.count("\nbudgets:") == 1
    path.write_text(uncommented)
    checked = run(["check-config", "-c", str(path)], env)
    assert checked.exit_code == 0, checked.output
    assert "matches no declared model" not in checked.stderr
    assert len(load_config(path).budgets) == 2


def test_init_says_why_an_azure_key_without_endpoint_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    result = run(["init", "-c", str(path)], {"AZURE_OPENAI_API_KEY": "k"})
    assert result.exit_code == 0, result.output
    assert "AZURE_OPENAI_ENDPOINT is not an http(s):// URL" in result.stderr
    assert "azure" not in yaml.safe_load(path.read_text())["providers"]


def test_init_keeps_an_existing_file_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "spendgate.yaml"
    path.write_text("# mine\n")
    refused = run(["init", "-c", str(path)], env_for("OPENAI_API_KEY"))
    assert refused.exit_code == 1
    assert "exists; pass --force" in refused.output
    assert "Traceback" not in refused.output
    assert path.read_text() == "# mine\n"

    forced = run(["init", "-c", str(path), "--force"], env_for("ANTHROPIC_API_KEY"))
    assert forced.exit_code == 0, forced.output
    assert "anthropic:" in path.read_text()
    assert not list(tmp_path.glob(".*.tmp"))


def test_init_follows_spendgate_config_and_says_what_it_cannot_write(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "gateway.yaml"
    env = {**env_for("OPENAI_API_KEY"), "SPENDGATE_CONFIG": str(target)}
    missing_dir = run(["init"], env)
    assert missing_dir.exit_code == 1
    assert missing_dir.output.startswith(f"Error: cannot write {target}")
    target.parent.mkdir()
    written = run(["init"], env)
    assert written.exit_code == 0, written.output
    assert target.exists()


def test_init_on_a_path_with_spaces_prints_a_next_step_that_pastes(tmp_path: Path) -> None:
    """``next: spendgate check-config -c /srv/my gateway/ünï.yaml`` split at the space when
    pasted into a shell; the path is now quoted for one, and the step runs as printed."""
    target = tmp_path / "my gateway" / "ünï config.yaml"
    target.parent.mkdir()
    written = run(["init", "-c", str(target)], env_for("OPENAI_API_KEY"))
    assert written.exit_code == 0, written.output
    step = written.output.splitlines()[-1].removeprefix("next: spendgate ")
    assert step == f"check-config -c '{target}'"
    checked = run(shlex.split(step), env_for("OPENAI_API_KEY"))
    assert checked.exit_code == 0, checked.output
