"""A budget and rate limits a key carries itself (`spendgate keys create --budget-usd ...
--requests ...`, ``POST /admin/keys`` with ``budget_usd``): stored with the key, enforced
from its first request by a gateway whose config declares no budget at all, shown by
`keys list` and `budgets`, and changed at run time (`keys update`, `budgets set-limit
key:<id>`). A real gateway on loopback (injected clock), the CLI on the same database."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from e2e.key_world import Setup, admin, run, run_json, started

ADMIN = "key-limits-admin-token"


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    for world in started(tmp_path_factory, "key-limits", ADMIN):
        assert not world.harness.gateway.config.budgets  # nothing declared: the keys' own
        assert not world.harness.gateway.config.limits
        yield world


def chat(setup: Setup, secret: str) -> Any:
    with openai.OpenAI(
        base_url=setup.harness.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        return client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": f"hello {uuid.uuid4().hex}"}],
            max_tokens=200,
            extra_headers={"x-sim-output-tokens": "200"},
        )


def until_refused(setup: Setup, secret: str, most: int = 60) -> tuple[int, openai.APIStatusError]:
    for served in range(most):
        try:
            chat(setup, secret)
        except openai.APIStatusError as refused:
            return served, refused
    raise AssertionError(f"{most} requests and none refused")


def test_a_key_made_with_a_budget_is_held_to_it(setup: Setup) -> None:
    made = run_json(
        setup, "keys", "create", "--name", "capped", "--budget-usd", "0.0005", "--period", "daily"
    )
    key_id, secret = made["id"], made["key"]
    assert (made["budget_usd"], made["budget_period"]) == ("0.0005", "daily")
    other = run_json(setup, "keys", "create", "--name", "free")["key"]

    served, refused = until_refused(setup, secret)
    assert served >= 1
    assert refused.status_code == 429
    assert refused.code == "insufficient_quota"
    assert f"key '{key_id}'" in refused.message
    spent = sum(row.cost_nanos for row in setup.harness.ledger(key_id))
    assert 0 < spent <= 500_000  # never past its $0.0005
    [block] = setup.harness.ledger(key_id, blocked=True)
    assert block.blocked_by == f"key:{key_id}"
    assert chat(setup, other).http_response.status_code == 200  # others are not held to it

    listed = run(setup, "keys", "list").stdout.splitlines()
    [line] = [line for line in listed if line.startswith(key_id)]
    assert line.split()[-3:] == ["active", "$0.0005", "daily"]
    # (the CLI counts on today's real clock; the gateway's admin API on its own)
    setup.clock.advance(1)  # the refusal is in the past second
    assert f"key:{key_id}" in {v["name"] for v in run_json(setup, "budgets")}
    [view] = admin(setup, "GET", f"/admin/budgets?name=key:{key_id}").json()["data"]
    assert (view["scope"], view["member"], view["limit"], view["period"]) == (
        "key",
        key_id,
        500_000,
        "daily",
    )
    assert view["spent"] == spent
    assert view["state"] in ("exhausted", "refusing")

    # At run time: an override for a while, then a new amount stored with the key.
    raised = admin(setup, "PUT", f"/admin/budgets/key:{key_id}/limit", {"limit": "1.00"})
    assert raised.status == 200, raised.body
    assert chat(setup, secret).http_response.status_code == 200
    assert admin(setup, "DELETE", f"/admin/budgets/key:{key_id}/limit").status == 200
    with pytest.raises(openai.RateLimitError):
        chat(setup, secret)
    updated = run_json(setup, "keys", "update", key_id, "--budget-usd", "2")
    assert (updated["budget_usd"], updated["budget_period"], updated["hint"]) == (
        "2",
        "daily",
        made["hint"],
    )
    assert chat(setup, secret).http_response.status_code == 200
    removed = run_json(setup, "keys", "update", key_id, "--budget-usd", "")
    assert (removed["budget_usd"], removed["budget_period"]) == (None, None)
    assert f"key:{key_id}" not in {v["name"] for v in run_json(setup, "budgets")}


def test_a_key_made_with_a_request_rate_is_limited(setup: Setup) -> None:
    made = run_json(setup, "keys", "create", "--name", "rated", "--requests", "2/hour")
    key_id, secret = made["id"], made["key"]
    first = chat(setup, secret)
    assert first.http_response.headers["x-ratelimit-limit-requests"] == "2"
    chat(setup, secret)
    full = setup.harness.gateway.full_limits
    seen_full = len(full)
    with pytest.raises(openai.RateLimitError) as refused:
        chat(setup, secret)  # refused by the reservation: the limit is learnt full
    assert refused.value.code == "rate_limit_exceeded"
    [block] = setup.harness.ledger(key_id, blocked=True)
    assert block.blocked_by == f"key:{key_id}:requests/hour"
    assert len(full) == seen_full + 1
    with pytest.raises(openai.RateLimitError) as again:
        chat(setup, secret)  # refused by the read before the body's work, alike
    assert (again.value.code, again.value.message) == (refused.value.code, refused.value.message)
    assert len(setup.harness.ledger(key_id, blocked=True)) == 2
    setup.clock.advance(3600 + 360)  # the hour (kept in tenths) rolls on: room again
    assert chat(setup, secret).http_response.status_code == 200
    assert len(full) == seen_full  # the read saw room: not read first any more
    assert "limit_requests: 2/hour" in run(setup, "keys", "show", key_id).stdout


def test_the_admin_api_sets_and_changes_a_keys_own_limits(setup: Setup) -> None:
    created = admin(
        setup,
        "POST",
        "/admin/keys",
        {"name": "api-capped", "budget_usd": "0.0004", "limit_requests": "100/minute"},
    )
    assert created.status == 201, created.body
    key = created.json()
    assert (key["budget_usd"], key["budget_period"], key["limit_requests"]) == (
        "0.0004",
        "monthly",
        "100/minute",
    )
    served, refused = until_refused(setup, key["key"])
    assert served >= 1
    assert refused.status_code == 429
    patched = admin(
        setup,
        "PATCH",
        f"/admin/keys/{key['id']}",
        {"budget_usd": 5, "budget_period": "weekly", "limit_requests": None},
    )
    assert patched.status == 200, patched.body
    body = patched.json()
    assert (body["budget_usd"], body["budget_period"], body["limit_requests"]) == (
        "5",
        "weekly",
        None,
    )
    assert chat(setup, key["key"]).http_response.status_code == 200


@pytest.mark.parametrize(
    ("body", "param", "message"),
    [
        ({"budget_usd": "lots"}, "budget_usd", "must be a dollar amount"),
        ({"budget_usd": "-1"}, "budget_usd", "must be more than 0"),
        ({"budget_usd": "5", "budget_period": "fortnightly"}, "budget_period", "unknown period"),
        ({"budget_period": "daily"}, "budget_period", "needs budget_usd"),
        ({"limit_requests": "lots/hour"}, "limit_requests", "is not a rate"),
        ({"limit_tokens": "10/fortnight"}, "limit_tokens", "unknown period"),
    ],
)
def test_bad_limits_are_refused_naming_the_field(
    setup: Setup, body: dict[str, Any], param: str, message: str
) -> None:
    refused = admin(setup, "POST", "/admin/keys", {"name": "bad", **body})
    assert refused.status == 400
    error = refused.json()["error"]
    assert error["param"] == param
    assert message in error["message"]
    cli_flags = {
        "budget_usd": "--budget-usd",
        "budget_period": "--period",
        "limit_requests": "--requests",
        "limit_tokens": "--tokens",
    }
    args = [arg for field, value in body.items() for arg in (cli_flags[field], value)]
    result = run(setup, "keys", "create", "--name", "bad", *args)
    assert result.exit_code == 1
    assert message in result.stderr
