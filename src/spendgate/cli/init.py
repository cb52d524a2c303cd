"""``spendgate init``: write a commented starter config for the providers whose keys are set.

The file names each key's environment variable (``api_key_env``), never its value: the
secret stays in the environment, where ``serve`` reads it.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import click

from spendgate.cli.common import config_option, failure
from spendgate.settings import Settings
from spendgate.text import escape


@dataclass(frozen=True)
class Detected:
    """A provider found in the environment: its config section and what was seen."""

    name: str
    why: str
    section: str


def _yaml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a YAML string, quotes and escapes included


def _openai(env: Mapping[str, str]) -> Detected | None:
    if not env.get("OPENAI_API_KEY"):
        return None
    return Detected(
        "openai",
        "OPENAI_API_KEY",
        """\
  openai:
    kind: openai
    base_url: https://api.openai.com/v1
    api_key_env: OPENAI_API_KEY
""",
    )


def _anthropic(env: Mapping[str, str]) -> Detected | None:
    if not env.get("ANTHROPIC_API_KEY"):
        return None
    return Detected(
        "anthropic",
        "ANTHROPIC_API_KEY",
        """\
  anthropic:
    kind: anthropic
    base_url: https://api.anthropic.com            # the host root, as ANTHROPIC_BASE_URL
    api_key_env: ANTHROPIC_API_KEY
""",
    )


def _gemini(env: Mapping[str, str]) -> Detected | None:
    variable = next((v for v in ("GEMINI_API_KEY", "GOOGLE_API_KEY") if env.get(v)), None)
    if variable is None:
        return None
    return Detected(
        "gemini",
        variable,
        f"""\
  gemini:                                          # Google's OpenAI-compatible endpoint
    kind: openai-compatible
    base_url: https://generativelanguage.googleapis.com/v1beta/openai
    api_key_env: {variable}
""",
    )


def _azure(env: Mapping[str, str]) -> Detected | None:
    endpoint = env.get("AZURE_OPENAI_ENDPOINT", "").strip().rstrip("/")
    if not env.get("AZURE_OPENAI_API_KEY") or not endpoint.startswith(("https://", "http://")):
        return None
    return Detected(
        "azure",
        "AZURE_OPENAI_API_KEY + AZURE_OPENAI_ENDPOINT",
        f"""\
  azure:                                           # Azure OpenAI's v1 API (model in the body)
    kind: openai
    base_url: {_yaml_str(endpoint + "/openai/v1")}
    api_key_env: AZURE_OPENAI_API_KEY
    auth: api-key                                  # Azure takes the key as `api-key`
    # Deployment URLs instead (/openai/deployments/<name>/chat/completions?api-version=...):
    # base_url: {_yaml_str(endpoint + "/openai")}
    # api_version: "2024-10-21"
""",
    )


def _openrouter(env: Mapping[str, str]) -> Detected | None:
    if not env.get("OPENROUTER_API_KEY"):
        return None
    return Detected(
        "openrouter",
        "OPENROUTER_API_KEY",
        """\
  openrouter:
    kind: openai-compatible
    base_url: https://openrouter.ai/api/v1
    api_key_env: OPENROUTER_API_KEY
    headers:                                       # optional: how OpenRouter lists your app
      HTTP-Referer: https://example.com
      X-Title: spendgate
""",
    )


_DETECTORS = (_openai, _anthropic, _gemini, _azure, _openrouter)

_MODELS = {
    "openai": """\
  gpt-4.1-mini: {provider: openai}
  gpt-4o: {provider: openai}
  gpt-5-codex: {provider: openai}                  # Codex CLI
""",
    "anthropic": """\
  claude-haiku-4-5: {provider: anthropic}          # Claude Code asks for these names
  claude-sonnet-4-6: {provider: anthropic}
  claude-opus-4-1: {provider: anthropic}
""",
    "gemini": """\
  gemini-2.5-flash: {provider: gemini}
  gemini-2.5-pro: {provider: gemini}
""",
    "azure": """\
  azure-gpt-4.1-mini:                              # upstream_model: your deployment's name;
    provider: azure                                # named after its model, it is priced as
    upstream_model: gpt-4.1-mini                   # that model (else add a price:)
""",
    "openrouter": """\
  openrouter-llama-3.3-70b:                        # OpenRouter's model id; priced here, or
    provider: openrouter                           # it would be refused (openrouter.ai/models)
    upstream_model: meta-llama/llama-3.3-70b-instruct
    price: {input: "0.13", output: "0.40"}         # dollars per million tokens
""",
}

# The dearest model (or pattern) of each provider's models above, for the budget example.
_DEAREST = {
    "openai": "gpt-4o",
    "anthropic": "claude-opus-*",
    "gemini": "gemini-2.5-pro",
    "azure": "azure-gpt-4.1-mini",
    "openrouter": "openrouter-llama-3.3-70b",
}

_HEAD = """\
# spendgate starter config, written by `spendgate init` for the provider keys it found:
# {found}.
# Every key: docs/configuration.md. Secrets never appear here: each provider names the
# environment variable that holds its key, which `spendgate serve` reads at start.
#
#   spendgate check-config -c {file}
#   spendgate serve -c {file}

server:
  host: 127.0.0.1                                  # 0.0.0.0 to listen on every interface
  port: 8700
  admin_token_env: SPENDGATE_ADMIN_TOKEN           # set it to enable the admin API

storage:
  url: sqlite:///spendgate.db                      # relative to this file

providers:
"""

_TAIL = """
orgs:
  my-org:
    teams: [platform]                              # keys carry a team: --team platform

# A budget caps spend before the call (docs/budgets.md). Uncomment to give every user $40
# a day on the dearest models, and the platform team $2,000 a month:
#
# budgets:
#   - name: per-user-daily
#     scope: user
#     models: [{dearest}]
#     limit_usd: "40"
#     period: daily
#   - name: platform-monthly
#     scope: team
#     match: platform
#     limit_usd: "2000"

# Rate limits per key (docs/limits.md):
#
# limits:
#   - name: per-key
#     scope: key
#     requests: "600/minute; 20000/day"
"""

_NONE_FOUND = "none found: OpenAI, with OPENAI_API_KEY still to set"


def starter_config(env: Mapping[str, str], file_name: str) -> tuple[str, list[Detected]]:
    """The starter file's text and the providers it declares. With no key in ``env``:
    OpenAI, whose key ``serve`` will ask for."""
    found = [d for d in (detect(env) for detect in _DETECTORS) if d is not None]
    declared = found or [d for d in [_openai({"OPENAI_API_KEY": "-"})] if d is not None]
    seen = ", ".join(d.why for d in found) if found else _NONE_FOUND
    text = _HEAD.format(found=seen, file=file_name)
    text += "".join(d.section for d in declared)
    text += "\nmodels:\n" + "".join(_MODELS[d.name] for d in declared)
    # the budget example names models this file declares: uncommented, it applies
    dearest = ", ".join(f'"{_DEAREST[d.name]}"' for d in declared)
    return text + _TAIL.replace("{dearest}", dearest), found


@click.command("init")
@config_option
@click.option("--force", is_flag=True, help="Replace the file if it exists.")
def init(config_path: str | None, force: bool) -> None:
    """Write a commented starter config for the provider keys set in the environment.

    It covers OPENAI_API_KEY, ANTHROPIC_API_KEY, GEMINI_API_KEY (or GOOGLE_API_KEY),
    AZURE_OPENAI_API_KEY with AZURE_OPENAI_ENDPOINT, and OPENROUTER_API_KEY, naming each
    variable, never writing its value."""
    settings = Settings.from_environment()
    path = settings.config_path(config_path)
    text, found = starter_config(settings.env, path.name)
    try:
        _write(path, text, force)
    except OSError as exc:
        raise failure(f"cannot write {path}: {exc.strerror or exc}") from None
    names = ", ".join(d.name for d in found) or "openai (set OPENAI_API_KEY before serve)"
    click.echo(f"wrote {escape(str(path))}: providers {names}")
    if settings.env.get("AZURE_OPENAI_API_KEY") and not any(d.name == "azure" for d in found):
        click.echo(  # else the key set would be left out without a word
            "note: AZURE_OPENAI_API_KEY is set but AZURE_OPENAI_ENDPOINT is not an http(s):// "
            "URL (https://<resource>.openai.azure.com), so no azure provider was written",
            err=True,
        )
    click.echo(f"next: spendgate check-config -c {escape(shlex.quote(str(path)))}")


def _write(path: Path, text: str, force: bool) -> None:
    if path.exists() and not force:
        raise failure(f"{path} exists; pass --force to replace it")
    if path.is_dir():
        raise failure(f"{path} is a directory")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
