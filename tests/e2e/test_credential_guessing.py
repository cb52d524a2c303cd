"""Guessing admin credentials is bounded: after `throttle.LIMIT` wrong credentials from one
address (admin API bearer or the dashboard's sign-in form) that address is answered 429
with Retry-After until the window passes; a correct credential is never counted, and the
memory kept is bounded however many addresses fail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from harness import GatewayHarness
from spendgate.api import throttle
from spendgate.cli.main import cli

ADMIN = "credential-guessing-admin-token"


@pytest.fixture
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("guessing") / "spendgate.db",
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
    ).start()
    yield harness
    harness.stop()


async def test_wrong_bearer_tokens_are_bounded_per_address(world: GatewayHarness) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(throttle.LIMIT):
            async with session.get(
                world.url + "/admin/keys", headers={"authorization": "Bearer wrong"}
            ) as answer:
                assert answer.status == 401
        async with session.get(
            world.url + "/admin/keys", headers={"authorization": "Bearer wrong"}
        ) as answer:
            assert answer.status == 429
            assert 0 < int(answer.headers["retry-after"]) <= throttle.WINDOW
        # the right token from the same address waits too (the address is blocked) ...
        async with session.get(
            world.url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}
        ) as answer:
            assert answer.status == 429
        async with session.post(
            world.url + "/ui/login", data={"token": "wrong"}, allow_redirects=False
        ) as answer:
            assert answer.status == 429


async def test_right_credentials_are_not_counted(world: GatewayHarness) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(throttle.LIMIT * 2):
            async with session.get(
                world.url + "/admin/keys", headers={"authorization": f"Bearer {ADMIN}"}
            ) as answer:
                assert answer.status == 200
        for _ in range(throttle.LIMIT):
            async with session.post(
                world.url + "/ui/login", data={"token": "wrong"}, allow_redirects=False
            ) as answer:
                assert answer.status == 303
        async with session.post(
            world.url + "/ui/login", data={"token": ADMIN}, allow_redirects=False
        ) as answer:
            assert answer.status == 429


def test_the_window_passes_and_memory_is_bounded() -> None:
    now = [0.0]
    attempts = throttle.FailedAttempts(limit=3, window=60, capacity=100, clock=lambda: now[0])
    for _ in range(3):
        assert attempts.retry_after("a") is None
        attempts.failed("a")
    assert attempts.retry_after("a") == 60
    now[0] = 59.5
    assert attempts.retry_after("a") == 1
    now[0] = 60
    assert attempts.retry_after("a") is None
    for n in range(10_000):
        attempts.failed(f"10.0.{n // 256}.{n % 256}")
    assert len(attempts) == 100


@pytest.mark.parametrize(("token", "warned"), [("short-admin-token", True), ("x" * 24, False)])
def test_check_config_warns_about_a_short_admin_token(token: str, warned: bool) -> None:
    config = Path(__file__).resolve().parents[2] / "examples" / "ollama.yaml"
    env: dict[str, str | None] = {"SPENDGATE_ADMIN_TOKEN": token, "SPENDGATE_CONFIG": None}
    result = CliRunner().invoke(cli, ["check-config", "-c", str(config)], env=env)
    assert result.exit_code == 0, result.output
    assert ("SPENDGATE_ADMIN_TOKEN is 17 characters long" in result.output) is warned
