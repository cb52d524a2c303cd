"""Two gateways on one PostgreSQL database (a throwaway one): an admin token made on one is
honoured by the other, and every admin change, on either or through the CLI (a process of
its own), is in the one audit log; budget alerts crossed by requests to both at once are
raised and delivered once each.

Real gateways (GatewayHarness) on loopback, the simulator upstream, a real webhook receiver
(`alertkit.Receiver`), the shared PostgreSQL server."""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import openai

from alertkit import Receiver, fast_delivery, wait_until
from e2e.process import create_key, gateway_env, http_request, spendgate_cli, write_config
from harness import GatewayHarness
from storage.pg_databases import throwaway_database

TOKEN = "sg-env-admin-pg-test"
MODEL = "gpt-4o-mini"
SIM = {"x-sim-output-tokens": "20"}
BUDGET = {
    "name": "team-ml",
    "scope": "team",
    "match": "ml",
    "limit_usd": "0.002",
    "period": "monthly",
    "hard": False,
}


@contextmanager
def two_gateways(
    tmp_path: Path, alerts: dict[str, Any]
) -> Iterator[tuple[list[GatewayHarness], Path]]:
    """The gateways, and a config file on their database for the CLI."""
    with throwaway_database() as url, ExitStack() as stack:

        def configure(data: dict[str, Any]) -> None:
            data["storage"] = {"url": url}
            data["budgets"] = [BUDGET]
            data["alerts"] = fast_delivery(dict(alerts))

        gateways = []
        for n in range(2):
            harness = GatewayHarness(
                tmp_path / f"unused-{n}.db",
                configure=configure,
                env={"SPENDGATE_ADMIN_TOKEN": TOKEN},
            ).start()
            stack.callback(harness.stop)
            gateways.append(harness)
        yield gateways, write_config(tmp_path, gateways[0].sim.url, configure=configure)


def call(gw: GatewayHarness, token: str, method: str, path: str, body: Any = None) -> Any:
    result = http_request(method, gw.url + path, body=body, token=token)
    assert result.status < 300, (result.status, result.body)
    return result.json()


async def fire(gw: GatewayHarness, secret: str, count: int) -> list[BaseException | None]:
    client = openai.AsyncOpenAI(
        api_key=secret, base_url=gw.openai_base_url, max_retries=0, timeout=60
    )
    async with client:

        async def one() -> None:
            await client.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "Say something short."}],
                max_tokens=50,
                extra_headers=SIM,
            )

        return await asyncio.gather(*(one() for _ in range(count)), return_exceptions=True)


async def fire_both(gateways: list[GatewayHarness], secret: str, each: int) -> list[Any]:
    results = await asyncio.gather(*(fire(gw, secret, each) for gw in gateways))
    return [r for found in results for r in found]


def test_admin_changes_on_either_gateway_are_in_one_audit_log(tmp_path: Path) -> None:
    with two_gateways(tmp_path, {}) as ((first, second), config):
        lead = call(
            first,
            TOKEN,
            "POST",
            "/admin/tokens",
            {"name": "lead", "role": "team_admin", "team": "ml"},
        )
        # The token made on the first gateway is stored in PostgreSQL: the second knows it.
        key = call(second, lead["token"], "POST", "/admin/keys", {"name": "svc", "team": "ml"})
        from_cli = create_key(config, "--name", "from-cli", "--team", "web")
        expected = [
            ("key.create", from_cli["id"], f"cli:{getpass.getuser()}"),
            ("key.create", key["id"], f"token:{lead['id']} (lead)"),
            ("token.create", lead["id"], "env"),
        ]
        for gw in (first, second):
            data = call(gw, TOKEN, "GET", "/admin/audit")["data"]
            assert [(e["action"], e["target"], e["actor"]) for e in data] == expected
            assert [e["team"] for e in data[:2]] == ["web", "ml"]
        done = spendgate_cli("audit", "-c", str(config), "--json", env=gateway_env())
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)  # a list of the API's entries
        assert [(e["action"], e["target"], e["actor"]) for e in printed] == expected


def test_alerts_crossed_on_two_gateways_at_once_are_delivered_once(tmp_path: Path) -> None:
    with Receiver() as receiver:
        alerts = {
            "channels": {"ops": {"kind": "webhook", "url": receiver.url + "/ops"}},
            "budgets": [
                {
                    "budget": "team-ml",
                    "thresholds": ["0.5", "0.8", "0.95", "1"],
                    "channels": ["ops"],
                }
            ],
        }
        with two_gateways(tmp_path, alerts) as (gateways, _):
            secret = call(gateways[0], TOKEN, "POST", "/admin/keys", {"name": "a", "team": "ml"})[
                "key"
            ]
            results = asyncio.run(fire_both(gateways, secret, 150))
            assert [repr(r.__cause__ or r) for r in results if r is not None] == []
            assert wait_until(lambda: len(receiver.bodies()) >= 4)
            store = gateways[1].gateway.storage.alert_store
            assert store is not None

            def finished() -> set[str]:
                return {entry.status for entry in gateways[1].call(store.log(1000))}

            # A body the receiver has may not have its attempt recorded yet: the sender
            # writes it once the receiver has answered.
            assert wait_until(lambda: finished() == {"delivered"})
            for gw in gateways:
                gw.call(gw.gateway.alerter.deliver_due())  # nothing more is due on either
            spent = sum(row.cost_nanos for row in gateways[0].ledger())
            assert spent > 2_000_000  # past the limit: every threshold was crossed
            log = gateways[1].call(store.log(1000))
        marks = sorted(int(body["mark"]) for body in receiver.bodies("/ops"))
        assert marks == [5000, 8000, 9500, 10000]
        assert len(log) == 4
        assert {(entry.status, entry.attempts) for entry in log} == {("delivered", 1)}
