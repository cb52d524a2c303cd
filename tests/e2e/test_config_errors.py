"""A broken config is refused with one message that names the file and the key path.

Each case goes through `load_config` (the message and `ConfigError.key`) and through
``spendgate check-config`` (exit status 1, the same message on stderr, nothing on stdout);
two of them also through a real ``python -m spendgate`` process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from e2e.process import gateway_env, spendgate_cli, write_config
from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI
from spendgate.cli.main import cli
from spendgate.config import load_config
from spendgate.errors import ConfigError
from terminal import safe_lines

SIM_URL = "http://127.0.0.1:9"  # never contacted: configs are only validated here
ENV: dict[str, str | None] = {
    "SIM_OPENAI_KEY": SIM_SECRET_OPENAI,
    "SIM_ANTHROPIC_KEY": SIM_SECRET_ANTHROPIC,
    "SPENDGATE_CONFIG": None,
}

Edit = Callable[[dict[str, Any]], None]


def _on_redis(limit: dict[str, Any]) -> Edit:
    """Counters on Redis (exact below 2^53) and ``limit`` as the one ``limits`` entry."""

    def edit(data: dict[str, Any]) -> None:
        data["storage"]["counters_url"] = "redis://127.0.0.1:6379/0"
        data["limits"] = [limit]

    return edit


def _set(path: str, value: Any) -> Edit:
    """An edit that sets ``a.b.c`` to ``value`` in the config dict."""

    def edit(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value

    return edit


# (case id, edit, key path, the problem as the message says it)
COUNTERS_PROBLEM = (
    "is not one live counters can use: they go on Redis (redis://host:6379/0, rediss://..., "
    "redis+sentinel://host:26379/service, redis+cluster://host:7000; see docs/storage.md)"
)

CASES: list[tuple[str, Edit, str, str]] = [
    ("unknown top-level key", _set("colour", "red"), "colour", "unknown key"),
    (
        # check-config said OK and `serve` refused it naming neither the file nor the key
        "counters on a scheme no backend has",
        _set("storage.counters_url", "memcached://:s3cret@cache:11211"),
        "storage.counters_url",
        f"scheme 'memcached' {COUNTERS_PROBLEM}",
    ),
    (
        "counters URL without a scheme (the secret not echoed)",
        _set("storage.counters_url", "redis//:s3cret@cache:6379"),
        "storage.counters_url",
        f"no scheme:// {COUNTERS_PROBLEM}",
    ),
    ("unknown nested key", _set("server.prot", 8080), "server.prot", "unknown key"),
    (
        "wrong type",
        _set("server.port", "abc"),
        "server.port",
        "Input should be a valid integer, unable to parse string as an integer",
    ),
    (
        "out of range",
        _set("server.port", 70000),
        "server.port",
        "Input should be less than or equal to 65535",
    ),
    (
        "bad enum",
        _set("providers.x", {"kind": "azure", "base_url": "https://example.invalid"}),
        "providers.x.kind",
        "Input should be 'openai', 'anthropic', 'openai-compatible' or 'gemini'",
    ),
    (
        "bad base_url",
        _set("providers.openai.base_url", "api.openai.com/v1"),
        "providers.openai.base_url",
        "must start with http:// or https://",
    ),
    (
        "undeclared provider",
        _set("models.gpt-5", {"provider": "azure"}),
        "models.gpt-5",
        "provider 'azure' is not declared under providers (declared: anthropic, openai)",
    ),
    (
        "undeclared provider in deployments",
        _set("models.gpt-5", {"deployments": [{"provider": "openai"}, {"provider": "azure"}]}),
        "models.gpt-5",
        "provider 'azure' is not declared under providers (declared: anthropic, openai)",
    ),
    (
        "price with only input",
        _set("models.house-model.price", {"input": "1"}),
        "models.house-model.price",
        "a price needs both input and output (dollars per 1M tokens) or free: true",
    ),
    (
        "negative price",
        _set("pricing.overrides", {"gpt-4o": {"input": "-1", "output": "2"}}),
        "pricing.overrides.gpt-4o",
        "input must not be negative",
    ),
    (
        "team in two orgs",
        _set("orgs.globex", {"teams": ["web"]}),
        "orgs.globex.teams",
        "team 'web' already belongs to org 'acme'",
    ),
    (
        "bad team name in a list",
        _set("orgs.acme.teams", ["ml", "two words"]),
        "orgs.acme.teams[1]",
        "'two words' is not a name: a letter or digit, then letters, digits and _ . : / @ + - "
        "(no spaces)",
    ),
    (
        # a mapping's key: the path was "models.gpt 4o.[key]", the words a regular expression
        "model name with a space",
        _set("models.gpt 4o", {"provider": "openai"}),
        "models.gpt 4o",
        "'gpt 4o' is not a name: a letter or digit, then letters, digits and _ . : / @ + - "
        "(no spaces)",
    ),
    (
        # the secret pasted where its variable's name goes: refused, and never echoed
        "a provider key where its variable's name goes",
        _set("providers.openai.api_key_env", "sk-proj-SECRET123"),
        "providers.openai.api_key_env",
        "not an environment variable name (letters, digits and _, not starting with a digit): "
        "name the variable that holds the secret (OPENAI_API_KEY), not the secret",
    ),
    (
        "a period in capitals",
        _set("budgets", [{"name": "b", "scope": "team", "limit_usd": "1", "period": "Daily"}]),
        "budgets[0].period",
        "'Daily' is not a period: hourly, daily, weekly, monthly, lifetime or rolling:<N>m|h|d "
        "(rolling:30m, rolling:24h, rolling:7d)",
    ),
    (
        "bad env var name",
        _set("providers.openai.api_key_env", "OPENAI-KEY"),
        "providers.openai.api_key_env",
        "not an environment variable name (letters, digits and _, not starting with a digit): "
        "name the variable that holds the secret (OPENAI_API_KEY), not the secret",
    ),
    # Names come back in every report: no key or text value may hold a control character.
    (
        "control character in a team",
        _set("orgs.acme.teams", ["ml", "web\x1b[2J"]),
        "orgs.acme.teams[1]",
        "contains a control or BIDI character (U+001B at position 3); "
        "names and values must be plain text",
    ),
    (
        "newline in an org name",
        _set("orgs.ac\nme", {"teams": ["ops"]}),
        "orgs.ac\\nme",  # the key path itself is shown escaped
        "the key contains a control or BIDI character (U+000A at position 2)",
    ),
    (
        "BIDI override in a model name",
        _set("models.gpt\u202e", {"provider": "openai"}),
        "models.gpt\\u202e",
        "the key contains a control or BIDI character (U+202E at position 3)",
    ),
    (
        "open OSC in a budget name",
        _set("budgets", [{"name": "b\x1b]0;pwned", "scope": "user", "limit_usd": 1}]),
        "budgets[0].name",
        "contains a control or BIDI character (U+001B at position 1)",
    ),
    (
        "carriage return in a budget's match",
        _set("budgets", [{"name": "b", "scope": "user", "match": "al\rice", "limit_usd": 1}]),
        "budgets[0].match",
        "contains a control or BIDI character (U+000D at position 2)",
    ),
    (
        "C1 control in a limit name",
        _set("limits", [{"name": "l\x9b", "scope": "user", "requests": "1/minute"}]),
        "limits[0].name",
        "contains a control or BIDI character (U+009B at position 1)",
    ),
    # a window reaching back 2,000 years overflowed `datetime` on every request it counted
    (
        "a rolling period with no window",
        _set(
            "budgets",
            [{"name": "b", "scope": "org", "limit_usd": 1, "period": "rolling:17520000h"}],
        ),
        "budgets[0]",
        "budget 'b': period 'rolling:17520000h' is too long: at most rolling:3650d (10 years)",
    ),
    (
        "a rate's period with no window",
        _set("limits", [{"name": "l", "scope": "user", "requests": "1/99999999day"}]),
        "limits[0].requests",
        "'1/99999999day': the period is at most 3650 days (10 years)",
    ),
    # checked for budgets only: every request a rate beyond 2^53 counted was a 503
    (
        "a token rate beyond what counters on Redis keep",
        _on_redis({"name": "l", "scope": "key", "tokens": "10/minute; 9007199254740992/day"}),
        "limits[0]",
        "limit 'l': tokens rate '9007199254740992/day' is beyond what counters on Redis keep "
        "exactly (below 9,007,199,254,740,992)",
    ),
    (
        "a dollar rate beyond what counters on Redis keep",
        _on_redis({"name": "l", "scope": "key", "usd": "9007200/hour"}),
        "limits[0]",
        "limit 'l': usd rate '9007200/hour' is beyond what counters on Redis keep exactly "
        "(below $9,007,199.25)",
    ),
]


def _write(folder: Path, edit: Edit) -> Path:
    return write_config(folder, SIM_URL, configure=edit, name="broken.yaml")


def _check_config(path: Path) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["check-config", "-c", str(path)], env=ENV)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("edit", "key", "problem"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_broken_config_names_file_and_key_path(
    tmp_path: Path, edit: Edit, key: str, problem: str
) -> None:
    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.path == str(path)
    assert error.key == key
    assert str(error).startswith(f"{path}: {key}: {problem}")

    status, out, err = _check_config(path)
    assert status == 1
    assert out == ""
    assert err == f"Error: {error}\n"
    safe_lines(err)


# (case id, file text, the message after "PATH: ")
RAW: list[tuple[str, str, str]] = [
    (
        "invalid YAML",
        "server:\n  port: 8700\n  host: [127.0.0.1\nstorage:\n  url: x\n",
        "not valid YAML at line 4, column 8: expected ',' or ']', but got ':'",
    ),
    (
        "tab indentation",
        "server:\n\tport: 8700\n",
        "not valid YAML at line 2, column 1: found character '\\t' that cannot start any token",
    ),
    ("a list at the top", "- server\n- models\n", "the top level must be a mapping of settings"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in RAW], ids=[c[0] for c in RAW])
def test_unparsable_config_names_file_and_position(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {message}"
    status, out, err = _check_config(path)
    assert (status, out, err) == (1, "", f"Error: {path}: {message}\n")


ENCODED: list[tuple[str, bytes, str]] = [
    (
        "Latin-1",
        "orgs:\n  acme:\n    teams: [caf\u00e9]\n".encode("latin-1"),
        "not UTF-8 text at line 3, column 16 (byte 0xe9): save the file as UTF-8",
    ),
    (
        "UTF-16",
        "server:\n  port: 8700\n".encode("utf-16"),
        "not UTF-8 text at line 1, column 1 (byte 0xff): save the file as UTF-8",
    ),
]


@pytest.mark.parametrize(("raw", "message"), [c[1:] for c in ENCODED], ids=[c[0] for c in ENCODED])
def test_a_config_not_in_utf8_names_file_and_position(
    tmp_path: Path, raw: bytes, message: str
) -> None:
    """It was a UnicodeDecodeError: a traceback from check-config, a 500 from
    POST /admin/reload (tests/e2e/test_reload.py)."""
    path = tmp_path / "encoded.yaml"
    path.write_bytes(raw)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: {message}"
    status, out, err = _check_config(path)
    assert (status, out, err) == (1, "", f"Error: {path}: {message}\n")


def test_an_empty_file_is_a_valid_config(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n", encoding="utf-8")
    config = load_config(path)
    assert config.providers == {}
    assert config.server.port == 8700


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "spendgate.yaml"
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}: cannot read the file: No such file or directory"
    status, out, err = _check_config(path)
    assert (status, out) == (1, "")
    assert err == f"Error: {path}: cannot read the file: No such file or directory\n"


def test_missing_default_file_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["check-config"], env=ENV)
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: no config file: spendgate.yaml does not exist in {tmp_path}. Pass one with "
        "-c PATH (--config), or set SPENDGATE_CONFIG=PATH\n"
    )
    named = CliRunner().invoke(
        cli, ["keys", "list"], env={**ENV, "SPENDGATE_CONFIG": str(tmp_path / "gone.yaml")}
    )
    assert named.exit_code == 1
    assert named.stderr == (
        f"Error: {tmp_path / 'gone.yaml'}: no such config file (named by $SPENDGATE_CONFIG); "
        "fix it or pass -c PATH\n"
    )


def test_every_problem_is_reported_first_one_leads(tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["server"]["prot"] = 1
        data["server"]["port"] = "abc"

    path = _write(tmp_path, edit)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: server.")
    assert "server.prot: unknown key" in message
    assert "server.port: Input should be a valid integer" in message


# ----------------------------------------------------------------------------- real processes


def test_check_config_process_exit_status_and_stderr(tmp_path: Path) -> None:
    path = _write(tmp_path, _set("server.prot", 8080))
    done = spendgate_cli("check-config", "-c", str(path))
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == f"Error: {path}: server.prot: unknown key\n"


def test_serve_refuses_to_start_without_a_provider_secret(tmp_path: Path) -> None:
    path = write_config(tmp_path, SIM_URL)
    env = gateway_env()
    del env["SIM_OPENAI_KEY"]
    done = subprocess.run(
        [sys.executable, "-m", "spendgate", "serve", "-c", str(path), "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr == (
        f"Error: {path}: providers.openai.api_key_env: "
        "the environment variable SIM_OPENAI_KEY is not set\n"
    )
    # check-config accepts the same setup, with a warning (keys and usage work without it).
    result = CliRunner().invoke(
        cli, ["check-config", "-c", str(path)], env={**ENV, "SIM_OPENAI_KEY": None}
    )
    assert result.exit_code == 0
    assert "warning: providers.openai.api_key_env: SIM_OPENAI_KEY is not set" in result.stderr


def test_the_counters_schemes_the_config_takes_are_those_storage_opens() -> None:
    from spendgate.config.storage import COUNTER_SCHEMES
    from spendgate.storage import open as opening

    assert set(COUNTER_SCHEMES) == set(opening._BACKENDS) | set(opening._COUNTERS_ONLY)
