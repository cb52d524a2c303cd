"""The example configs: every file under examples/ passes ``spendgate check-config`` with no
unpriced model, and the provider examples (Azure OpenAI, Ollama, OpenRouter) serve every
model they declare through a real gateway, with their base URLs pointed at the simulator:
the credential each provider expects (``api-key``, none, a bearer token with OpenRouter's
app headers), the path each one serves, and the price each one is billed at."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import openai
import pytest
import yaml
from click.testing import CliRunner

from harness import GatewayHarness
from spendgate.cli.main import cli
from spendgate.simulator import RequestRecord, SimulatorOptions

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.yaml"))
SECRET = "provider-secret-for-examples-0123"


def _env_names(data: dict[str, Any]) -> list[str]:
    return [spec["api_key_env"] for spec in data["providers"].values() if "api_key_env" in spec]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_config_checks_clean(path: Path) -> None:
    data = yaml.safe_load(path.read_text())
    env: dict[str, str | None] = dict.fromkeys(_env_names(data), "set")
    env["SPENDGATE_CONFIG"] = None
    result = CliRunner().invoke(cli, ["check-config", "-c", str(path)], env=env)
    assert result.exit_code == 0, result.output
    assert "OK:" in result.output
    # The deployment examples keep their data in /var/lib/spendgate, which the image, the
    # systemd unit (StateDirectory) or the operator creates: on this machine check-config
    # rightly warns that it does not exist (nor, then, the keys whose labels it would
    # check). Any other warning is a mistake in the example.
    warnings = [line for line in result.output.splitlines() if line.startswith("warning")]
    deployed = ("the folder /var/lib/spendgate does not exist here", "does not exist yet")
    wrong = [line for line in warnings if not any(text in line for text in deployed)]
    assert wrong == [], result.output


def _azure(record: RequestRecord) -> None:
    assert record.headers["api-key"] == SECRET
    assert "authorization" not in record.headers
    assert record.path.startswith("/openai/")
    if record.path.startswith("/openai/deployments/"):
        assert record.query == "api-version=2024-10-21"


def _ollama(record: RequestRecord) -> None:
    assert "authorization" not in record.headers
    assert "api-key" not in record.headers
    assert record.path.startswith("/v1/")


def _openrouter(record: RequestRecord) -> None:
    assert record.headers["authorization"] == f"Bearer {SECRET}"
    assert record.headers["http-referer"] == "https://gateway.example.com"
    assert record.headers["x-title"] == "acme spendgate"


PROVIDER_EXAMPLES: list[tuple[str, Callable[[RequestRecord], None], bool]] = [
    ("azure.yaml", _azure, True),
    ("ollama.yaml", _ollama, False),
    ("openrouter.yaml", _openrouter, True),
]


@pytest.mark.parametrize(
    ("name", "check", "auth"), PROVIDER_EXAMPLES, ids=lambda v: getattr(v, "__name__", str(v))
)
def test_provider_example_serves_every_model(
    tmp_path: Path, name: str, check: Callable[[RequestRecord], None], auth: bool
) -> None:
    example = yaml.safe_load((ROOT / "examples" / name).read_text())

    def configure(data: dict[str, Any]) -> None:
        sim = data["providers"]["openai"]["base_url"].removesuffix("/v1")
        for key, value in example.items():
            if key not in ("server", "storage"):
                data[key] = value
        for spec in data["providers"].values():
            path = urlsplit(spec["base_url"]).path
            spec["base_url"] = sim + (path if path.startswith("/openai") else "/v1")

    gw = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=configure,
        sim_options=SimulatorOptions(require_auth=auth),
        env=dict.fromkeys(_env_names(example), SECRET),
    ).start()
    try:
        secret = gw.create_key(team=next(iter(example["orgs"].values()))["teams"][0], user="u")
        client = openai.OpenAI(
            api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=10
        )
        for model, spec in example["models"].items():
            if "embed" in model:
                client.embeddings.create(model=model, input="tea")
            else:
                answer = client.chat.completions.create(
                    model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=16
                )
                assert answer.choices[0].message.content
            record = gw.sim.records[-1]
            assert gw.wait_for(lambda record=record: record.finished)
            assert record.status == 200
            assert record.body["model"] == spec.get("upstream_model", model)
            check(record)
        rows = gw.ledger(gw.last_key_id)
        assert sorted(row.requested_model for row in rows) == sorted(example["models"])
        for row in rows:
            price = example["models"][row.requested_model].get("price", {})
            if price.get("free"):
                assert row.cost_nanos == 0
            else:
                assert row.cost_nanos > 0
    finally:
        gw.stop()
