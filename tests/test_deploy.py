"""The container image, compose file and systemd unit, checked without Docker (base images
cannot be pulled where these tests run): the Dockerfile installs the wheel that
``pip wheel`` builds from pyproject.toml and runs the command line the README documents;
compose runs the same command with a mounted config and a data volume; and that wheel,
built here and installed in a fresh virtual environment, runs the image's command line
against a config until the image's own healthcheck passes."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from spendgate.config import load_config
from spendgate.config.schema import ServerConfig

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------ Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text()
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in logical]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction, args in dockerfile():
        if instruction == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((instruction, args))
    return stages


def _one(stage: list[tuple[str, str]], instruction: str) -> str:
    found = [args for name, args in stage if name == instruction]
    assert len(found) == 1, f"{instruction}: {found}"
    return found[0]


def image_command() -> list[str]:
    runtime = _stages()[-1]
    entrypoint = json.loads(_one(runtime, "ENTRYPOINT"))
    command = json.loads(_one(runtime, "CMD"))
    return [*entrypoint, *command]


def _option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_the_image_is_built_from_the_wheel_in_two_stages() -> None:
    arg = dict(a.split("=", 1) for n, a in dockerfile() if n == "ARG")
    assert arg["PYTHON_IMAGE"] == "python:3.11-slim"
    build, runtime = _stages()
    assert _one(build, "FROM") == "${PYTHON_IMAGE} AS build"
    assert _one(runtime, "FROM") == "${PYTHON_IMAGE}"
    copied = " ".join(args for name, args in build if name == "COPY")
    assert "pyproject.toml" in copied
    assert "src" in copied
    assert shlex.split(_one(build, "RUN")) == [
        "pip", "wheel", "--no-cache-dir", "--wheel-dir", "/wheels", ".",
    ]  # fmt: skip
    install = _one(runtime, "RUN")
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in install
    assert "pip install --no-cache-dir --no-index --find-links=/wheels spendgate" in install
    # Nothing but the wheels: no source tree in the runtime stage.
    assert not [args for name, args in runtime if name in ("COPY", "ADD")]


def test_the_image_runs_as_a_non_root_user_with_a_data_volume_and_a_healthcheck() -> None:
    runtime = _stages()[-1]
    user = _one(runtime, "USER").split(":")[0]
    assert user not in ("root", "0")
    assert "useradd --system --uid 10001 --user-group" in _one(runtime, "RUN")
    volume = json.loads(_one(runtime, "VOLUME"))
    assert volume == ["/var/lib/spendgate"]
    assert _one(runtime, "WORKDIR") == "/var/lib/spendgate"
    argv = image_command()
    assert argv[:2] == ["spendgate", "serve"]
    port = _option(argv, "--port")
    assert _one(runtime, "EXPOSE") == port
    assert _option(argv, "--host") == "0.0.0.0"
    env = _one(runtime, "ENV")
    assert f"SPENDGATE_CONFIG={_option(argv, '--config')}" in env  # docker exec ... spendgate
    health = _one(runtime, "HEALTHCHECK")
    assert f"http://127.0.0.1:{port}/readyz" in health


def test_the_readme_documents_the_command_the_image_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    assert shlex.join(image_command()) in readme
    assert "untested here" in readme
    assert "(docs/deploy.md)" in readme
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "Untested here" in deploy
    assert " ".join(image_command()[:4]) in deploy.replace("\n", " ")


def test_dockerignore_keeps_what_the_build_copies() -> None:
    ignored = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for needed in ("pyproject.toml", "README.md", "src"):
        assert needed not in ignored
    assert ".venv" in ignored
    assert ".git" in ignored


# --------------------------------------------------------------------------- compose


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return data


def _mounts(service: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """container path -> (source, mode)"""
    out = {}
    for volume in service["volumes"]:
        source, target, *mode = volume.split(":")
        out[target] = (source, mode[0] if mode else "rw")
    return out


@pytest.mark.parametrize("name", ["gateway", "gateway-sim"])
def test_compose_runs_the_image_command_with_a_mounted_config_and_a_data_volume(
    name: str,
) -> None:
    data = compose()
    service = data["services"][name]
    assert service["build"] == "."
    argv = image_command()
    assert ["spendgate", *service["command"]] == argv
    mounts = _mounts(service)
    source, mode = mounts[_option(argv, "--config")]
    assert mode == "ro"
    config_path = ROOT / source
    assert config_path.is_file()
    volume, _ = mounts["/var/lib/spendgate"]
    assert volume in data["volumes"]  # a named volume, kept across `down`/`up`
    config = load_config(config_path)
    assert config.storage.url.startswith("sqlite:////var/lib/spendgate/")
    port = _option(argv, "--port")
    assert str(config.server.port) == port
    assert any(p.endswith(f":{port}") for p in service["ports"])
    environment = service["environment"]
    for spec in config.providers.values():
        if spec.api_key_env:
            assert spec.api_key_env in environment
    assert config.server.admin_token_env in environment


def test_compose_stops_after_the_drain_and_the_simulator_profile_is_wired() -> None:
    data = compose()
    gateway = data["services"]["gateway"]
    drain = load_config(ROOT / _mounts(gateway)["/etc/spendgate/spendgate.yaml"][0])
    assert int(gateway["stop_grace_period"].removesuffix("s")) > drain.server.drain_timeout_s
    simulator = data["services"]["simulator"]
    assert simulator["entrypoint"] == ["python", "-m", "spendgate.simulator"]
    port = _option(simulator["command"], "--port")
    sim = data["services"]["gateway-sim"]
    config = load_config(ROOT / _mounts(sim)["/etc/spendgate/spendgate.yaml"][0])
    for spec in config.providers.values():
        assert spec.base_url.startswith(f"http://simulator:{port}")
    assert "simulator" in sim["depends_on"]
    assert simulator["profiles"] == sim["profiles"] == ["simulator"]


# --------------------------------------------------------------------------- systemd


def _unit() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in (ROOT / "examples" / "systemd" / "spendgate.service").read_text().splitlines():
        if "=" in line and not line.startswith(("#", ";")):
            key, value = line.split("=", 1)
            out.setdefault(key, []).append(value)
    return out


def test_the_systemd_unit_is_hardened_and_reloads_with_sighup() -> None:
    unit = _unit()
    assert unit["ExecStart"] == [
        "/opt/spendgate/bin/spendgate serve --config /etc/spendgate/spendgate.yaml"
    ]
    assert unit["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert "ExecReload=/bin/kill -HUP $MAINPID" in (ROOT / "docs" / "reload.md").read_text()
    assert unit["StateDirectory"] == ["spendgate"]
    assert unit["ReadWritePaths"] == ["/var/lib/spendgate"]
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "User": "spendgate",
    }.items():
        assert unit[key] == [value], key
    assert int(unit["TimeoutStopSec"][0]) > 30  # server.drain_timeout_s's default


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_accepts_the_unit(tmp_path: Path) -> None:
    spendgate = Path(sys.executable).parent / "spendgate"
    text = (ROOT / "examples" / "systemd" / "spendgate.service").read_text()
    unit = tmp_path / "spendgate.service"
    unit.write_text(text.replace("/opt/spendgate/bin/spendgate", str(spendgate)))
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip() == "", result.stderr  # an unknown key is only a message


# ------------------------------------------------------- the wheel, built and run here


def _run(argv: list[str], **options: Any) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        argv, capture_output=True, text=True, check=False, env=env, timeout=300, **options
    )


@pytest.mark.slow
def test_the_wheel_runs_the_image_command_until_the_healthcheck_passes(tmp_path: Path) -> None:
    # The Dockerfile's build stage, without the dependencies' wheels (this environment has
    # them installed; the image's build fetches them).
    # What the build stage COPYs, and only that (setuptools builds in the source tree).
    source = tmp_path / "src-copy"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    skip = shutil.ignore_patterns("*.egg-info", "__pycache__")
    shutil.copytree(ROOT / "src", source / "src", ignore=skip)
    wheels = tmp_path / "wheels"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(wheels)]
    built = _run([*pip_wheel, str(source)])
    assert built.returncode == 0, built.stderr
    [wheel] = wheels.glob("spendgate-*.whl")

    venv = tmp_path / "venv"
    made = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
         "--no-index", str(wheel)]
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    site = Path(
        _run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    # The dependencies from this environment, after the venv's own site-packages: the
    # spendgate imported is the wheel's.
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    where = _run([str(python), "-c", "import spendgate; print(spendgate.__file__)"])
    assert where.stdout.strip().startswith(str(site)), where

    config = tmp_path / "etc" / "spendgate.yaml"
    config.parent.mkdir()
    data = tmp_path / "data"
    data.mkdir()
    config.write_text(
        f"""
storage:
  url: sqlite:///{data}/spendgate.db
providers:
  local:
    kind: openai-compatible
    base_url: http://127.0.0.1:9/v1
models:
  llama3.2: {{provider: local, price: {{free: true}}}}
"""
    )
    argv = image_command()
    argv[0] = str(venv / "bin" / "spendgate")
    argv[argv.index("--config") + 1] = str(config)
    argv[argv.index("--port") + 1] = "0"
    argv[argv.index("--host") + 1] = "127.0.0.1"
    checked = _run([argv[0], "check-config", "--config", str(config)])
    assert checked.returncode == 0, checked.stderr
    assert "OK" in checked.stdout

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, cwd=data)
    try:
        assert process.stderr is not None
        port = None
        for line in process.stderr:  # the first log line says where it listens
            record = json.loads(line)
            if record["msg"] == "listening":
                port = int(record["url"].rsplit(":", 1)[1])
                break
        assert port is not None, "the gateway never said it was listening"
        health = json.loads(_one(_stages()[-1], "HEALTHCHECK").split("CMD", 1)[1])
        health = [str(python), *health[1:]]
        health[-1] = health[-1].replace(":8700/", f":{port}/")
        for _ in range(100):  # bounded: a start takes well under a second
            if _run(health).returncode == 0:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the image's healthcheck never passed")
        assert (data / "spendgate.db").exists()
    finally:
        process.send_signal(signal.SIGTERM)
        _, rest = process.communicate(timeout=60)  # reads the remaining logs, closes the pipe
    assert process.returncode == 0, rest  # SIGTERM drains and exits 0, as `docker stop` expects


# ------------------------------------------------------------------ reverse proxy guide


def _block(language: str) -> str:
    doc = (ROOT / "docs" / "deploy.md").read_text()
    [block] = re.findall(rf"```{language}\n(.*?)```", doc, flags=re.DOTALL)
    return block


def _seconds(text: str, directive: str) -> list[int]:
    return [int(value) for value in re.findall(rf"{directive}\s+(\d+)s", text)]


def test_the_nginx_snippet_streams_unbuffered_and_outwaits_spendgate() -> None:
    server = ServerConfig()
    nginx = _block("nginx")
    assert "proxy_buffering off;" in nginx
    assert "proxy_request_buffering off;" in nginx
    assert 'proxy_set_header Connection "";' in nginx
    assert "proxy_http_version 1.1;" in nginx
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in nginx
    assert "listen 443 ssl;" in nginx
    assert "ssl_certificate " in nginx
    [read] = _seconds(nginx, "proxy_read_timeout")
    assert read > server.upstream_timeout_s
    [size] = re.findall(r"client_max_body_size (\d+)m;", nginx)
    assert int(size) * 1024 * 1024 >= server.max_body_bytes


def test_the_caddy_snippet_streams_unbuffered_and_outwaits_spendgate() -> None:
    server = ServerConfig()
    caddy = _block("caddyfile")
    assert "flush_interval -1" in caddy
    [read] = _seconds(caddy, "read_timeout")
    assert read > server.upstream_timeout_s
    [size] = re.findall(r"max_size (\d+)MB", caddy)
    assert int(size) * 1024 * 1024 >= server.max_body_bytes
