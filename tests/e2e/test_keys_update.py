"""A key's life after it is issued: its labels change in place (`spendgate keys update`,
``PATCH /admin/keys/{id}``) without a new secret; an expired key lists as expired; a key
this gateway does not know is refused with a hint (a provider's key sent by mistake, a
rotated secret). A real gateway on loopback with an injected clock; the CLI on the same
database."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from click.testing import CliRunner, Result

from e2e.key_world import ENV, T0, Setup, admin, run, run_json, started
from e2e.process import write_config
from spendgate.cli.main import cli

ADMIN = "keys-update-admin-token"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    yield from started(tmp_path_factory, "keys-update", ADMIN)


def chat(setup: Setup, secret: str) -> Any:
    with openai.OpenAI(
        base_url=setup.harness.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        return client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=10
        )


# ----------------------------------------------------------------------------- update


def test_keys_update_changes_labels_not_the_secret(setup: Setup) -> None:
    made = run_json(setup, "keys", "create", "--name", "typo", "--team", "web", "--user", "al")
    secret, key_id = made["key"], made["id"]
    chat(setup, secret)
    updated = run_json(
        setup, "keys", "update", key_id, "--team", "ml", "--user", "", "--service", "etl",
        "--tag", "batch", "--tag", "nightly", "--model", "gpt-4o*", "--name", "fixed",
    )  # fmt: skip
    assert (updated["id"], updated["hint"]) == (key_id, made["hint"])
    assert (updated["name"], updated["team"], updated["org"]) == ("fixed", "ml", "acme")
    assert (updated["user"], updated["service"]) == (None, "etl")
    assert (updated["tags"], updated["allowed_models"]) == (["batch", "nightly"], ["gpt-4o*"])
    assert "key" not in updated  # no new secret to hand out
    chat(setup, secret)  # the same secret works, under the new labels from now on
    before, after = setup.harness.ledger(key_id)
    assert (before.team, before.user, before.service) == ("web", "al", None)
    assert (after.team, after.user, after.service, after.tags) == (
        "ml",
        None,
        "etl",
        ("batch", "nightly"),
    )
    shown = run_json(setup, "keys", "show", key_id)
    assert (shown["team"], shown["name"], shown["state"]) == ("ml", "fixed", "active")

    cleared = run_json(setup, "keys", "update", key_id, "--clear-tags", "--all-models")
    assert (cleared["tags"], cleared["allowed_models"], cleared["team"]) == ([], [], "ml")


def test_keys_update_refuses_what_create_refuses(setup: Setup) -> None:
    key_id = run_json(setup, "keys", "create", "--name", "strict")["id"]
    for args, message in (
        (("--team", "nosuchteam"), "unknown team 'nosuchteam'"),
        (("--expires", "2020-01-01"), "is not in the future"),
        (("--name", "  "), "non-empty name"),
        ((), "nothing to change"),
        (("--tag", "a", "--clear-tags"), "not both"),
    ):
        result = run(setup, "keys", "update", key_id, *args)
        assert result.exit_code == 1, (args, result.output)
        assert message in result.stderr, (args, result.stderr)
    missing = run(setup, "keys", "update", "key_nope", "--team", "ml")
    assert missing.exit_code == 1
    assert "no key with id 'key_nope'" in missing.stderr
    run(setup, "keys", "revoke", key_id)
    revoked = run(setup, "keys", "update", key_id, "--team", "ml")
    assert "revoked and cannot be updated" in revoked.stderr


def test_a_key_whose_team_was_dropped_from_orgs_can_still_be_updated(
    setup: Setup, tmp_path: Path
) -> None:
    """A reorganisation removes team ``web`` from ``orgs`` (and a reload takes it): the keys
    that carry it keep it. Renaming such a key, or giving it a budget, must not fail with
    "unknown team 'web'" (it did: a team not being changed was checked as if set now);
    moving it to a team that is not declared still is refused."""
    key_id = run_json(setup, "keys", "create", "--name", "reorg", "--team", "web")["id"]

    def without_web(data: dict[str, Any]) -> None:
        data["orgs"] = {"acme": {"teams": ["ml", "platform"]}}

    config = write_config(
        tmp_path, setup.harness.sim.url, db_path=setup.harness.db_path, configure=without_web
    )

    def update(*args: str) -> Result:
        return CliRunner().invoke(
            cli, ["keys", "update", key_id, *args, "-c", str(config)], env=ENV
        )

    renamed = update("--name", "reorg-renamed", "--budget-usd", "5", "--json")
    assert renamed.exit_code == 0, renamed.output
    assert (json.loads(renamed.stdout)["name"], json.loads(renamed.stdout)["team"]) == (
        "reorg-renamed",
        "web",
    )
    refused = update("--team", "web")
    assert refused.exit_code == 1
    assert "unknown team 'web'; teams declared under orgs: ml, platform" in refused.stderr
    moved = update("--team", "ml", "--json")
    assert moved.exit_code == 0, moved.output
    assert json.loads(moved.stdout)["team"] == "ml"


def test_a_time_the_cli_printed_pastes_back(setup: Setup) -> None:
    """``--expires`` and ``--until`` take the times the CLI prints (``...+00:00``), the ``Z``
    form and minutes alone (``tokens create --expires`` took them; these refused every one:
    "does not match the formats '%Y-%m-%d', ..."), and a time with another zone as that
    moment in UTC."""
    made = run_json(
        setup, "keys", "create", "--name", "zoned", "--expires", "2099-01-01T01:00+01:00"
    )
    assert made["expires_at"] == "2099-01-01T00:00:00+00:00"
    for given in (made["expires_at"], "2099-01-01T00:00:00Z", "2099-01-01T00:00", "2099-01-01"):
        updated = run_json(setup, "keys", "update", made["id"], "--expires", given)
        assert updated["expires_at"] == "2099-01-01T00:00:00+00:00", given
    budget = f"key:{made['id']}"
    assert run(setup, "keys", "update", made["id"], "--budget-usd", "3.00").exit_code == 0
    for given in (made["expires_at"], "2099-01-01T00:00:00Z", "2099-01-01T00:00"):
        result = run(setup, "budgets", "set-limit", budget, "4.00", "--until", given)
        assert result.exit_code == 0, (given, result.output)
        assert result.stdout == f"{budget}: limit set to 4.00 until 2099-01-01T00:00:00+00:00\n"
    refused = run(setup, "budgets", "set-limit", budget, "4.00", "--until", "next week")
    assert refused.exit_code == 2
    assert "'next week' is not a time: give a UTC date or time" in refused.stderr


def test_admin_patch_updates_a_key(setup: Setup) -> None:
    made = admin(setup, "POST", "/admin/keys", {"name": "api", "team": "web", "user": "bo"})
    assert made.status == 201
    key = made.json()
    patched = admin(setup, "PATCH", f"/admin/keys/{key['id']}", {"team": "platform", "user": None})
    assert patched.status == 200, patched.body
    body = patched.json()
    assert (body["team"], body["user"], body["name"], body["hint"]) == (
        "platform",
        None,
        "api",
        key["hint"],
    )
    assert "key" not in body
    chat(setup, key["key"])
    [row] = setup.harness.ledger(key["id"])
    assert (row.team, row.user) == ("platform", None)
    for bad, message in (
        ({"secret": "x"}, "Unknown field(s): secret"),
        ({}, "Nothing to change"),
        ({"team": 3}, "'team' must be a string"),
    ):
        refused = admin(setup, "PATCH", f"/admin/keys/{key['id']}", bad)
        assert refused.status == 400
        assert message in refused.json()["error"]["message"]
    assert admin(setup, "PATCH", "/admin/keys/key_nope", {"team": "ml"}).status == 404


# ----------------------------------------------------------------------------- state


def test_an_expired_key_lists_as_expired(setup: Setup) -> None:
    """Made on the gateway's clock (T0) to expire an hour later: by the CLI's clock (now,
    long after), expired; by the gateway's, active until its clock passes the hour."""
    expires = T0 + timedelta(hours=1)
    secret = setup.harness.create_key(name="short-lived", expires_at=expires)
    key_id = setup.harness.last_key_id
    listed = {k["id"]: k for k in run_json(setup, "keys", "list")}
    assert listed[key_id]["state"] == "expired"
    table = run(setup, "keys", "list").stdout.splitlines()
    [line] = [line for line in table if line.startswith(key_id)]
    assert line.split()[-2:] == ["expired", "-"]
    via_api = admin(setup, "GET", f"/admin/keys/{key_id}").json()
    assert via_api["state"] == "active"  # the gateway's clock: still within the hour
    chat(setup, secret)
    setup.clock.advance(3601)
    assert admin(setup, "GET", f"/admin/keys/{key_id}").json()["state"] == "expired"
    with pytest.raises(openai.AuthenticationError, match="has expired"):
        chat(setup, secret)


# ----------------------------------------------------------------------------- hints


@pytest.mark.parametrize(
    ("secret", "provider"),
    [
        ("sk-ant-api03-" + "x" * 40, "an Anthropic"),
        ("sk-proj-" + "y" * 40, "an OpenAI"),
        ("sk-" + "z" * 48, "an OpenAI"),
        ("sk-or-v1-" + "w" * 40, "an OpenRouter"),
    ],
)
def test_a_provider_key_sent_by_mistake_says_so(setup: Setup, secret: str, provider: str) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(setup, secret)
    message = refused.value.message
    assert f"this looks like {provider} API key, not a spendgate key" in message
    assert "sk-sg-..." in message
    assert secret not in message
    with (
        anthropic.Anthropic(api_key=secret, base_url=setup.harness.url, max_retries=0) as client,
        pytest.raises(anthropic.AuthenticationError, match=f"looks like {provider} API key"),
    ):
        client.messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )


def test_a_rotated_or_revoked_key_says_so(setup: Setup) -> None:
    made = admin(setup, "POST", "/admin/keys", {"name": "rotating"}).json()
    rotated = admin(setup, "POST", f"/admin/keys/{made['id']}/rotate").json()
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(setup, made["key"])
    assert refused.value.message.endswith(
        f"This API key ({made['hint']}) was rotated at "
        f"{setup.clock.now().isoformat(timespec='seconds')}: its old secret stopped working "
        f"then. Use the new secret of key {made['id']} (shown once, by `spendgate keys "
        "rotate`)."
    )
    chat(setup, rotated["key"])
    with pytest.raises(openai.AuthenticationError) as unknown:
        chat(setup, "sk-sg-" + "q" * 40)  # never a key's: no rotation to speak of
    assert "this gateway does not know it" in unknown.value.message
    assert "rotated" not in unknown.value.message
    assert admin(setup, "POST", f"/admin/keys/{made['id']}/revoke").status == 200
    for secret in (rotated["key"], made["key"]):  # the old secret too: revoked says it all
        with pytest.raises(openai.AuthenticationError, match="has been revoked"):
            chat(setup, secret)
