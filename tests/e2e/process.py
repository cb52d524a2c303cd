"""Run the gateway the way an operator does: ``python -m spendgate serve`` in a subprocess.

The config is `base_config` from tests/harness.py dumped to YAML in a temporary folder;
provider secrets and the admin token come from the child's environment. Every process
started here is reaped (``wait()``), so no ResourceWarning escapes into the tests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

import yaml

from harness import SIM_SECRET_ANTHROPIC, SIM_SECRET_OPENAI, base_config
from spendgate.clock import SystemClock
from spendgate.config import load_config
from spendgate.domain.ledger import LedgerRow
from spendgate.services.keys import IssuedKey, KeyService, KeySpec
from spendgate.storage.open import open_storage

ADMIN_TOKEN = "sg-admin-test-token-4f9c2a"  # 20+ characters: no weak-token warning
START_TIMEOUT_S = 20.0


def free_port() -> int:
    """A loopback port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_config(
    folder: Path,
    sim_url: str,
    *,
    db_path: Path | None = None,
    configure: Callable[[dict[str, Any]], None] | None = None,
    name: str = "spendgate.yaml",
) -> Path:
    """`base_config` (optionally edited by ``configure``) as YAML in ``folder``."""
    data = base_config(sim_url, db_path or folder / "spendgate.db")
    if configure is not None:
        configure(data)
    path = folder / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def gateway_env(*, admin_token: str | None = ADMIN_TOKEN, **extra: str) -> dict[str, str]:
    """The parent's environment plus provider secrets (and the admin token, unless None)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("SPENDGATE_ADMIN_TOKEN", "SPENDGATE_CONFIG")
    }
    env["SIM_OPENAI_KEY"] = SIM_SECRET_OPENAI
    env["SIM_ANTHROPIC_KEY"] = SIM_SECRET_ANTHROPIC
    env["PYTHONUNBUFFERED"] = "1"
    if admin_token is not None:
        env["SPENDGATE_ADMIN_TOKEN"] = admin_token
    env.update(extra)
    return env


def spendgate_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``python -m spendgate ARGS``; never raises on a non-zero exit status."""
    return subprocess.run(
        [sys.executable, "-m", "spendgate", *args],
        env=dict(env) if env is not None else gateway_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def create_key(config_path: Path, *args: str, env: Mapping[str, str] | None = None) -> Any:
    """``spendgate keys create -c CONFIG --json ARGS``: the JSON printed (with the secret)."""
    done = spendgate_cli("keys", "create", "-c", str(config_path), "--json", *args, env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def create_key_direct(config_path: Path, **spec: Any) -> IssuedKey:
    """Create a key straight in the config's database (no subprocess: fast)."""
    config = load_config(config_path)
    for name in ("tags", "allowed_models"):
        if name in spec:
            spec[name] = tuple(spec[name])

    async def create() -> IssuedKey:
        storage = open_storage(config.storage.url)
        await storage.open()
        try:
            return await KeyService(storage, config, SystemClock()).create(KeySpec(**spec))
        finally:
            await storage.close()

    return asyncio.run(create())


def read_ledger(db_path: Path) -> list[LedgerRow]:
    """Every ledger row in the SQLite file, oldest first (opens it as the gateway would)."""

    async def read() -> list[LedgerRow]:
        storage = open_storage(f"sqlite:///{db_path}")
        await storage.open()
        try:
            return await storage.ledger(
                datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC) + timedelta(days=1)
            )
        finally:
            await storage.close()

    return asyncio.run(read())


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_request(
    method: str,
    url: str,
    *,
    body: Any = None,
    token: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 5.0,
) -> HttpResult:
    """One HTTP request on a fresh connection; any status comes back (no exception)."""
    data = None
    sent = dict(headers or {})
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        sent.setdefault("content-type", "application/json")
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=data, method=method, headers=sent)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return HttpResult(
                int(response.status),
                {k.lower(): v for k, v in response.headers.items()},
                response.read(),
            )
    except urllib.error.HTTPError as exc:
        with exc:
            return HttpResult(
                int(exc.code), {k.lower(): v for k, v in exc.headers.items()}, exc.read()
            )


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    result = http_request("GET", url, timeout=timeout)
    return result.status, result.body


class GatewayProcess:
    """One ``spendgate serve`` child; its stdout and stderr go to a log file."""

    def __init__(
        self,
        config_path: Path,
        *,
        env: Mapping[str, str] | None = None,
        port: int | None = None,
        log_path: Path | None = None,
        args: Sequence[str] = (),
    ) -> None:
        self.config_path = config_path
        self.args = tuple(args)  # more ``serve`` options (``--workers 3``)
        self.env = dict(env) if env is not None else gateway_env()
        self.port = port or free_port()
        self.log_path = log_path or config_path.with_name(f"gateway-{self.port}.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: TextIO | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = START_TIMEOUT_S) -> GatewayProcess:
        """Start the child and wait until ``/readyz`` answers 200."""
        self._log = self.log_path.open("a", encoding="utf-8")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "spendgate",
                "serve",
                "-c",
                str(self.config_path),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *self.args,
            ],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"spendgate serve exited early:\n{self.log()}")
            try:
                status, _ = http_get(self.url + "/readyz", timeout=0.5)
            except OSError:
                status = 0
            if status == 200:
                return
            time.sleep(0.02)
        self.stop()
        raise TimeoutError(f"spendgate serve not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def log_events(self) -> list[dict[str, Any]]:
        """The JSON log lines the gateway wrote (other lines are skipped)."""
        events = []
        for line in self.log().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def signal(self, signum: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill9(self) -> int:
        """SIGKILL and reap; the exit status (``-9``)."""
        assert self.proc is not None
        self.proc.kill()
        return self.wait(10)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.returncode is not None:
                self.close()

    def stop(self, timeout: float = 10) -> int | None:
        """SIGTERM, wait, SIGKILL as a last resort; always reaps the child."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.close()
        return self.proc.returncode

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> GatewayProcess:
        return self.start() if self.proc is None else self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def running_gateway(
    config_path: Path, *, env: Mapping[str, str] | None = None, port: int | None = None
) -> Iterator[GatewayProcess]:
    process = GatewayProcess(config_path, env=env, port=port)
    process.start()
    try:
        yield process
    finally:
        process.stop()
