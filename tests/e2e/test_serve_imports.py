"""What a serving gateway holds in memory starts with what it imports (docs/benchmarks.md,
"Memory at idle after traffic"): a gateway on SQLite, with budgets and limits but no
telemetry, no Redis and no PostgreSQL, imports none of the backends it does not use, nor
the simulator, the demo or the process pool, and loads no encoding before a request needs
one. Checked by what ``sys.modules`` holds once the gateway and its app are built, in a
fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from e2e.process import gateway_env, write_config

UNUSED = (
    "asyncpg",
    "redis",
    "hiredis",
    "opentelemetry",
    "spendgate.storage.postgres",
    "spendgate.storage.redis",
    "spendgate.simulator",
    "spendgate.demo",
    "rich",
    "multiprocessing",
    "concurrent.futures.process",
    "bpe_openai",
)

PROBE = """
import json, sys
from spendgate.api.app import create_app
from spendgate.cli.common import gateway_for
create_app(gateway_for(sys.argv[1], need_providers=True))
print("\\nMODULES " + json.dumps(sorted(sys.modules)))
"""


def _with_budgets(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "key", "scope": "key", "match": "*", "limit_usd": "1000", "period": "daily"}
    ]
    data["limits"] = [{"name": "rpm", "scope": "key", "requests": "1000/minute"}]


def test_a_sqlite_gateway_imports_no_backend_it_does_not_use(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", configure=_with_budgets)
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env=gateway_env(),
    )
    assert done.returncode == 0, done.stderr
    modules = set(json.loads(done.stdout.rsplit("\nMODULES ", 1)[1]))
    assert "spendgate.pipeline.proxy" in modules  # (the probe does see the gateway's modules)
    loaded = sorted(m for m in modules if any(m == r or m.startswith(r + ".") for r in UNUSED))
    assert loaded == []
