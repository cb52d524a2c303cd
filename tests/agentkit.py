"""Real coding agents (Claude Code, Codex CLI) against a real gateway, offline.

* The agents are the unmodified npm packages at pinned versions, installed once into
  ``.agents/`` in the repository (git-ignored) by ``make agents`` or, failing that, by the
  first test that needs them. If they cannot be installed the tests fail: they never skip.
* Every run happens in a **network namespace of its own** (``unshare -n``, ``lo`` up,
  nothing else): the agents cannot reach the internet, and nothing else can reach them.
  The gateway and the simulator run in the same namespace, in the test process itself: the
  harness's server thread enters the namespace before its event loop starts (a network
  namespace belongs to a thread, ``setns(2)``), so the gateway keeps an injected clock and
  tests read its ledger and the simulator's records directly. The agents are started with
  ``nsenter --net``.

``python tests/agentkit.py`` installs the agents (what ``make agents`` runs).
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
AGENTS_DIR = REPO / ".agents"
CLAUDE_CODE = ("@anthropic-ai/claude-code", "2.1.328")
CODEX = ("@openai/codex", "0.169.0")
PINNED = (CLAUDE_CODE, CODEX)
INSTALL_TIMEOUT_S = 600

CLONE_NEWNET = 0x40000000


# ====================================================================== installation


def agent_bin(name: str) -> Path:
    return AGENTS_DIR / "node_modules" / ".bin" / name


def installed_versions() -> dict[str, str | None]:
    """``claude --version`` / ``codex --version`` as printed (None: missing or broken)."""
    versions: dict[str, str | None] = {}
    for name in ("claude", "codex"):
        path = agent_bin(name)
        try:
            done = subprocess.run(
                [str(path), "--version"], capture_output=True, text=True, timeout=60, check=False
            )
        except OSError:
            versions[name] = None
            continue
        versions[name] = done.stdout.strip() if done.returncode == 0 else None
    return versions


def _pinned_present() -> bool:
    versions = installed_versions()
    claude, codex = versions["claude"], versions["codex"]
    return (
        claude is not None
        and claude.startswith(CLAUDE_CODE[1] + " ")
        and codex is not None
        and codex.endswith(" " + CODEX[1])
    )


def ensure_installed() -> None:
    """Install the pinned agents into ``.agents/`` unless they are there already; raise
    ``RuntimeError`` (with npm's output) when that fails."""
    if _pinned_present():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is not on PATH: cannot install the coding agents")
    AGENTS_DIR.mkdir(exist_ok=True)
    specs = [f"{name}@{version}" for name, version in PINNED]
    done = subprocess.run(
        [npm, "install", "--prefix", str(AGENTS_DIR), "--no-audit", "--no-fund", *specs],
        capture_output=True,
        text=True,
        timeout=INSTALL_TIMEOUT_S,
        check=False,
    )
    if done.returncode != 0 or not _pinned_present():
        raise RuntimeError(
            f"npm install {' '.join(specs)} failed (exit {done.returncode}); "
            f"installed: {installed_versions()}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )


# ====================================================================== the namespace


class NetNamespace:
    """A fresh network namespace with only ``lo`` up, held open by a sleeping process."""

    def __init__(self) -> None:
        self._holder = subprocess.Popen(
            ["unshare", "--net", "sh", "-c", "ip link set lo up && echo up && exec sleep 86400"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self._holder.stdout is not None
        line = self._holder.stdout.readline().strip()
        if line != "up":
            self.close()
            raise RuntimeError(f"cannot create a network namespace (unshare -n): {line!r}")
        self.path = f"/proc/{self._holder.pid}/ns/net"

    def enter_this_thread(self) -> None:
        """Move the calling thread into the namespace (sockets it opens live there)."""
        libc = ctypes.CDLL(None, use_errno=True)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            if libc.setns(fd, CLONE_NEWNET) != 0:
                errno = ctypes.get_errno()
                raise OSError(errno, f"setns({self.path}): {os.strerror(errno)}")
        finally:
            os.close(fd)

    def command(self, *argv: str) -> list[str]:
        """``argv`` run inside the namespace."""
        return ["nsenter", f"--net={self.path}", "--", *argv]

    def close(self) -> None:
        if self._holder.poll() is None:
            self._holder.kill()
        self._holder.wait(10)
        for stream in (self._holder.stdout, self._holder.stderr):
            if stream is not None:
                stream.close()


def namespaced_harness(ns: NetNamespace, db_path: Path, **options: Any) -> Any:
    """A `GatewayHarness` whose servers (gateway and simulator) listen inside ``ns``."""
    from harness import GatewayHarness

    harness = GatewayHarness(db_path, **options)

    def serve() -> None:
        ns.enter_this_thread()
        harness.loop.run_forever()

    harness._thread = threading.Thread(target=serve, daemon=True)
    return harness


# ====================================================================== running agents


@dataclass
class AgentRun:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def __str__(self) -> str:
        return (
            f"exit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout\n{self.stdout[-3000:]}\n--- stderr\n{self.stderr[-3000:]}"
        )


@dataclass
class Agents:
    """Runs ``claude -p`` and ``codex exec`` inside ``ns`` against a gateway at ``url``."""

    ns: NetNamespace
    url: str
    home: Path

    def _env(self, extra: Mapping[str, str]) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.home),
            "LANG": "C.UTF-8",
            "TERM": "dumb",
            "NO_COLOR": "1",
        }
        env.update(extra)
        return env

    def claude_argv(self, prompt: str, model: str) -> list[str]:
        return [str(agent_bin("claude")), "-p", prompt, "--model", model]

    def claude_env(
        self, secret: str, headers: Mapping[str, str] | None = None, **extra: str
    ) -> dict[str, str]:
        env = {
            "ANTHROPIC_BASE_URL": self.url,
            "ANTHROPIC_API_KEY": secret,
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_AUTOUPDATER": "1",
        }
        if headers:
            env["ANTHROPIC_CUSTOM_HEADERS"] = "\n".join(f"{k}: {v}" for k, v in headers.items())
        env.update(extra)
        return self._env(env)

    def codex_home(
        self, name: str, model: str, headers: Mapping[str, str] | None = None, **provider: Any
    ) -> Path:
        """A ``CODEX_HOME`` whose config sends ``model`` to the gateway's Responses API."""
        home = self.home / f"codex-{name}"
        home.mkdir(parents=True, exist_ok=True)
        lines = [
            f'model = "{model}"',
            'model_provider = "spendgate"',
            "",
            "[model_providers.spendgate]",
            'name = "spendgate"',
            f'base_url = "{self.url}/v1"',
            'env_key = "SPENDGATE_KEY"',
            'wire_api = "responses"',
        ]
        lines += [f"{key} = {value}" for key, value in provider.items()]
        if headers:
            pairs = ", ".join(f'"{k}" = "{v}"' for k, v in headers.items())
            lines.append(f"http_headers = {{ {pairs} }}")
        # Offline, Codex's plugin sync and its metrics export (ab.chatgpt.com) each wait
        # ~5 s for DNS before it exits: turn them off.
        lines += ["", "[features]", "plugins = false", "remote_plugin = false"]
        lines += ["", "[analytics]", "enabled = false"]
        (home / "config.toml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return home

    def codex_argv(self, prompt: str) -> list[str]:
        return [str(agent_bin("codex")), "exec", "--skip-git-repo-check", prompt]

    def codex_env(self, secret: str, codex_home: Path) -> dict[str, str]:
        return self._env({"CODEX_HOME": str(codex_home), "SPENDGATE_KEY": secret})

    def start(self, argv: list[str], env: Mapping[str, str], cwd: Path) -> Started:
        cwd.mkdir(parents=True, exist_ok=True)
        proc = subprocess.Popen(
            self.ns.command(*argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        return Started(argv, proc, time.monotonic())

    def run(
        self, argv: list[str], env: Mapping[str, str], cwd: Path, timeout: float = 60
    ) -> AgentRun:
        return self.start(argv, env, cwd).finish(timeout)


@dataclass
class Started:
    argv: list[str]
    proc: subprocess.Popen[str]
    started: float

    def finish(self, timeout: float = 60) -> AgentRun:
        try:
            stdout, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            stdout, stderr = self.proc.communicate(timeout=10)
            stderr += f"\n[killed after {timeout}s]"
        return AgentRun(
            self.argv,
            self.proc.returncode,
            stdout,
            stderr,
            time.monotonic() - self.started,
        )


@contextmanager
def agent_world(tmp: Path, **harness_options: Any) -> Iterator[tuple[Any, Agents]]:
    """A namespace with a gateway + simulator in it, and agents pointed at the gateway."""
    ensure_installed()
    ns = NetNamespace()
    try:
        harness = namespaced_harness(ns, tmp / "spendgate.db", **harness_options).start()
        try:
            yield harness, Agents(ns, harness.url, tmp / "home")
        finally:
            harness.stop()
    finally:
        ns.close()


if __name__ == "__main__":
    try:
        ensure_installed()
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        sys.exit(1)
    print(" ".join(f"{name}@{version}" for name, version in PINNED), "in", AGENTS_DIR)
