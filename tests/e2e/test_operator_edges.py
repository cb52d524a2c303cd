"""Odd but valid operator input on the admin API, through a real gateway (tests/harness.py,
SQLite, a `ManualClock`, real traffic through the openai SDK): each answer is right or a
`400` naming the field, and a mistaken body changes nothing.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import openai
import pytest

from e2e.process import http_request
from e2e.test_budgets_admin import ADMIN, admin
from e2e.workers_world import REDIS, Stores, drop_stores
from harness import GatewayHarness
from spendgate.clock import ManualClock

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
PAST, NOW = "2026-03-10T08:59:00Z", T0.isoformat()


def configure(data: dict[str, Any]) -> None:
    data["budgets"] = [
        {"name": "org-monthly", "scope": "org", "match": "acme", "limit_usd": "1000"},
        {"name": "per-team", "scope": "team", "limit_usd": "100", "period": "daily"},
    ]


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(T0)


@pytest.fixture
def gw(tmp_path: Path, clock: ManualClock) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=configure,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=clock,
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def embed(gw: GatewayHarness, secret: str) -> None:
    with openai.OpenAI(
        base_url=gw.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        client.embeddings.create(model="text-embedding-3-small", input="hi")


def refused_on_create_and_update(
    gw: GatewayHarness, key_id: str, cases: Iterable[tuple[dict[str, str], str]], said: str
) -> None:
    """Each body is a 400 naming its field, its message saying ``said``, both on creating a
    key and on updating ``key_id``."""
    for body, param in cases:
        for method, path, sent in (
            ("POST", "/admin/keys", {"name": "refused", **body}),
            ("PATCH", f"/admin/keys/{key_id}", body),
        ):
            result = admin(gw, method, path, sent)
            assert result.status == 400, (method, body, result.body)
            assert result.json()["error"]["param"] == param, (method, body, result.body)
            assert said in result.json()["error"]["message"], (method, body, result.body)


def test_a_large_budget_burning_slowly_is_listed(gw: GatewayHarness, clock: ManualClock) -> None:
    """$1,000 a month and one short embedding (a few nano-dollars) in the last hour: at that
    rate the cap lies past the year 9999. The forecast overflowed `datetime`, and every view
    of the budgets failed with a 500 (the admin API, /v1/spendgate/me, the dashboard)."""
    secret = gw.create_key(name="embedder", team="ml", user="ann")
    embed(gw, secret)
    clock.advance(60)
    listed = admin(gw, "GET", "/admin/budgets?name=org-monthly")
    assert listed.status == 200, listed.body
    [view] = listed.json()["data"]
    assert 0 < view["spent"] < 1_000
    forecast = view["forecast"]
    assert forecast["recent"] == view["spent"]
    assert (forecast["cap_at"], forecast["exceeds"]) == (None, False)
    me = http_request("GET", gw.url + "/v1/spendgate/me", token=secret)
    assert me.status == 200, me.body
    assert "org-monthly" in {b["name"] for b in me.json()["budgets"]}


def test_a_mistaken_budget_body_changes_nothing(gw: GatewayHarness) -> None:
    """A misspelt field in a reset (``memberz``) reset every member of the budget, as if no
    member had been named; an ``expires_at`` that is not a string made an override that
    never expires; an ``expires_at`` already past made an override that never applied. Each
    is now a 400 naming the field, and the counters and limits stay."""
    for team in ("ml", "web"):
        embed(gw, gw.create_key(name=f"k-{team}", team=team))

    def per_team() -> dict[str, tuple[int, int]]:
        listed = admin(gw, "GET", "/admin/budgets?name=per-team")
        assert listed.status == 200, listed.body
        return {v["member"]: (v["spent"], v["limit"]) for v in listed.json()["data"]}

    before = per_team()
    assert set(before) == {"ml", "web"}
    assert all(spent > 0 for spent, _ in before.values())
    for method, path, body, param in (
        ("POST", "/admin/budgets/per-team/reset", {"memberz": "ml"}, "memberz"),
        ("POST", "/admin/budgets/per-team/reset", {"member": "ml", "all": True}, "all"),
        ("PUT", "/admin/budgets/per-team/limit", {"limit": "5", "expires_at": 1}, "expires_at"),
        ("PUT", "/admin/budgets/per-team/limit", {"limit": "5", "expires_at": []}, "expires_at"),
        ("PUT", "/admin/budgets/per-team/limit", {"limit": "5", "expires": "x"}, "expires"),
        # an override already expired (or expiring now) would never apply
        ("PUT", "/admin/budgets/per-team/limit", {"limit": "5", "expires_at": PAST}, "expires_at"),
        ("PUT", "/admin/budgets/per-team/limit", {"limit": "5", "expires_at": NOW}, "expires_at"),
    ):
        result = admin(gw, method, path, body)
        assert result.status == 400, (body, result.body)
        assert result.json()["error"]["param"] == param, (body, result.body)
    assert per_team() == before
    audit = admin(gw, "GET", "/admin/audit?action=budget.reset").json()["data"]
    audit += admin(gw, "GET", "/admin/audit?action=budget.set_limit").json()["data"]
    assert audit == []
    # the right fields still work: one member reset, the other kept
    reset = admin(gw, "POST", "/admin/budgets/per-team/reset", {"member": "ml"})
    assert reset.json() == {"name": "per-team", "member": "ml", "counters_reset": 1}
    after = per_team()
    assert after["web"] == before["web"]
    assert after.get("ml", (0, 0))[0] == 0


REPORTS = (
    "/admin/usage?period={}",
    "/admin/usage?bucket=day&period={}",
    "/admin/usage?bucket=hour&period={}",
    "/admin/blocks?period={}",
    "/admin/savings?period={}",
)


def test_a_report_on_the_last_days_of_the_calendar(gw: GatewayHarness) -> None:
    """``period=9999-12-31`` ends on a midnight no `datetime` holds: it was a 500 on every
    report (and a traceback from the CLI's); now a 400 naming ``period``. The day before is
    a report like any other (empty: a period in the future ends now)."""
    for path in REPORTS:
        refused = admin(gw, "GET", path.format("9999-12-31"))
        assert refused.status == 400, (path, refused.body)
        error = refused.json()["error"]
        assert error["param"] == "period"
        assert "ends after 9999-12-30, the last day a report can cover" in error["message"]
        served = admin(gw, "GET", path.format("9999-12-30"))
        assert served.status == 200, (path, served.body)
        assert served.json()["since"] == "9999-12-30T00:00:00+00:00"


def test_a_report_on_the_first_days_of_the_calendar(gw: GatewayHarness) -> None:
    """``period=0001-01-01``: the savings report (with dollar budgets configured) looks 30
    days back from the period's end for typical outputs, before the year 1: it was a 500
    (and a traceback from ``spendgate savings``). Days before the epoch, where no row is,
    are clamped to it, as ``all`` starts there: every report answers, empty."""
    for path in REPORTS:
        for period in ("0001-01-01", "0001-01-01..0001-01-02", "1969-12-31"):
            served = admin(gw, "GET", path.format(period))
            assert served.status == 200, (path, period, served.body)
            body = served.json()
            assert body["since"] == body["until"] == "1970-01-01T00:00:00+00:00", body
    spanning = admin(gw, "GET", "/admin/usage?period=1969-12-31..1970-01-01").json()
    assert (spanning["since"], spanning["until"]) == (
        "1970-01-01T00:00:00+00:00",
        "1970-01-02T00:00:00+00:00",
    )


def test_a_limit_beyond_what_storage_holds_is_a_400(gw: GatewayHarness) -> None:
    """A run-time limit of $1e30 did not fit the storage's integer column: the override was
    a 503 "storage is failing" (and an error in the log), a key's own budget or rate was
    accepted. Each is now a 400 naming the field, and nothing is stored."""
    big = "99999999999999999999"  # 1e20: above 2^63 - 1 (in nano-dollars, requests or tokens)
    refused = admin(gw, "PUT", "/admin/budgets/per-team/limit", {"limit": "1e30"})
    assert refused.status == 400, refused.body
    error = refused.json()["error"]
    assert (error["param"], error["message"]) == (
        "limit",
        "limit must be at most $9,223,372,036",
    )
    assert admin(gw, "GET", "/admin/audit?action=budget.set_limit").json()["data"] == []
    most = admin(gw, "PUT", "/admin/budgets/per-team/limit", {"limit": "9223372036"})
    assert most.json() == {"name": "per-team", "limit": 9_223_372_036 * 10**9, "expires_at": None}
    secret = gw.create_key(name="spender", team="ml")
    key_id = gw.last_key_id
    cases = (
        ({"budget_usd": "1e30"}, "budget_usd"),
        ({"budget_usd": big}, "budget_usd"),
        ({"limit_requests": f"{big}/minute"}, "limit_requests"),
        ({"limit_tokens": f"10/second; {big}/day"}, "limit_tokens"),
    )
    refused_on_create_and_update(gw, key_id, cases, "must be at most")
    keys = admin(gw, "GET", "/admin/keys").json()["data"]
    assert [(k["name"], k["budget_usd"], k["limit_requests"]) for k in keys] == [
        ("spender", None, None)
    ]
    embed(gw, secret)
    assert admin(gw, "GET", "/admin/budgets").status == 200


@pytest.mark.parametrize(
    "path",
    [
        "/admin/usage?period=all",
        "/admin/usage?bucket=day&period=all",
        "/admin/savings?period=all",
        "/admin/audit",
    ],
)
def test_a_report_format_other_than_json_or_csv_is_a_400(gw: GatewayHarness, path: str) -> None:
    """``format=CSV`` or ``format=xml`` was answered in JSON, as if no format were asked."""
    for chosen in ("CSV", "xml", ""):
        refused = admin(gw, "GET", f"{path}&format={chosen}".replace("audit&", "audit?"))
        assert refused.status == 400, (chosen, refused.body)
        assert refused.json()["error"]["param"] == "format"
        assert refused.json()["error"]["message"] == f"format must be json or csv, not {chosen!r}"
    for chosen, kind in (("json", "application/json"), ("csv", "text/csv")):  # series too
        answered = admin(gw, "GET", f"{path}&format={chosen}".replace("audit&", "audit?"))
        assert answered.status == 200, answered.body
        assert answered.headers["content-type"].startswith(kind)


def test_an_expiry_past_what_storage_holds_is_a_400(gw: GatewayHarness) -> None:
    """``9999-12-31T23:59:59-05:00`` is in the year 10000 in UTC: a key, admin token or
    override expiring then was stored, and reading its row back overflowed `datetime`. One
    such key failed every listing of keys (``GET /admin/keys``, ``spendgate keys list``),
    every budget change and view (they look up the keys' teams), and its own revoke, with
    a 500 until the row was mended in SQL; ``expires_in: 99999999999d`` was a 500. Each is
    now a 400 naming the field."""
    late = "9999-12-31T23:59:59-05:00"
    key_id = admin(gw, "POST", "/admin/keys", {"name": "kept"}).json()["id"]
    for method, path, body, param in (
        ("POST", "/admin/keys", {"name": "forever", "expires_at": late}, "expires_at"),
        ("PATCH", f"/admin/keys/{key_id}", {"expires_at": late}, "expires_at"),
        ("POST", "/admin/tokens", {"name": "t", "role": "viewer", "expires_at": late}, None),
        ("POST", "/admin/tokens", {"name": "t", "role": "viewer", "expires_in": "3000000d"}, None),
        (
            "POST",
            "/admin/tokens",
            {"name": "t", "role": "viewer", "expires_in": "99999999999d"},
            "expires_in",
        ),
        ("PUT", "/admin/budgets/per-team/limit", {"limit": "5", "expires_at": late}, None),
    ):
        result = admin(gw, method, path, body)
        assert result.status == 400, (body, result.body)
        error = result.json()["error"]
        assert error["param"] == (param or ("expires_in" if "expires_in" in body else "expires_at"))
        assert "spendgate stores" in error["message"], error
    for path in ("/admin/keys", "/admin/tokens", "/admin/budgets"):
        assert admin(gw, "GET", path).status == 200, path
    # the last day storage holds is still a valid expiry, and lists
    last = admin(gw, "POST", "/admin/keys", {"name": "late", "expires_at": "9999-12-30T23:00Z"})
    assert last.status == 201, last.body
    listed = {k["name"]: k for k in admin(gw, "GET", "/admin/keys").json()["data"]}
    assert listed["late"]["expires_at"] == "9999-12-30T23:00:00+00:00"
    assert admin(gw, "POST", f"/admin/keys/{last.json()['id']}/revoke").status == 200


def test_a_limit_beyond_what_redis_counters_keep_is_a_400(
    tmp_path: Path, clock: ManualClock
) -> None:
    """With the counters on Redis (exact below 2^53: about $9,007,199 in nano-dollars), a
    key's own budget or rate beyond that was accepted, and then every request of the key
    was a 503 (the counter store refused the plan); a run-time override beyond it was a 503
    "storage is failing". Each is now a 400 naming the field, and nothing is stored."""

    prefix = f"sgtest-{uuid.uuid4().hex[:12]}"
    stores = Stores(f"sqlite:///{tmp_path / 'spendgate.db'}", f"{REDIS}?prefix={prefix}")

    def on_redis(data: dict[str, Any]) -> None:
        configure(data)
        data["storage"] = {"url": stores.url, "counters_url": stores.counters_url}

    gw = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=on_redis,
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=clock,
    ).start()
    try:
        beyond = str(2**53)
        refused = admin(gw, "PUT", "/admin/budgets/per-team/limit", {"limit": "9007200"})
        assert refused.status == 400, refused.body
        error = refused.json()["error"]
        assert error["param"] == "limit"
        assert error["message"].startswith("limit must be at most $9,007,199"), error
        secret = gw.create_key(name="spender", team="ml")
        key_id = gw.last_key_id
        cases = (
            ({"budget_usd": "9007200"}, "budget_usd"),
            ({"limit_requests": f"{beyond}/minute"}, "limit_requests"),
            ({"limit_tokens": f"10/second; {beyond}/day"}, "limit_tokens"),
        )
        refused_on_create_and_update(gw, key_id, cases, "must be at most")
        assert admin(gw, "GET", "/admin/audit?action=budget.set_limit").json()["data"] == []
        keys = admin(gw, "GET", "/admin/keys").json()["data"]
        assert [(k["name"], k["budget_usd"]) for k in keys] == [("spender", None)]
        # just below the bound is kept exactly, and requests under it are answered
        kept = admin(gw, "PATCH", f"/admin/keys/{key_id}", {"budget_usd": "9007199"})
        assert kept.status == 200, kept.body
        most = admin(gw, "PUT", "/admin/budgets/per-team/limit", {"limit": "9007199"})
        assert most.status == 200, most.body
        embed(gw, secret)
    finally:
        gw.stop()
        drop_stores(stores)


def test_a_query_parameter_that_means_nothing_is_a_400(gw: GatewayHarness) -> None:
    """``include_revoked=maybe`` and ``all=maybe`` silently meant false, ``?name=`` listed
    every budget as if no name were given, and an audit ``since`` after its ``until`` was
    an empty 200. Each is now a 400 naming the parameter; the documented values work."""
    kept = admin(gw, "POST", "/admin/keys", {"name": "kept"}).json()["id"]
    gone = admin(gw, "POST", "/admin/keys", {"name": "gone"}).json()["id"]
    assert admin(gw, "POST", f"/admin/keys/{gone}/revoke").status == 200
    for path, param in (
        ("/admin/keys?include_revoked=maybe", "include_revoked"),
        ("/admin/keys?include_revoked=", "include_revoked"),
        ("/admin/loops?all=maybe", "all"),
        ("/admin/budgets?name=", "name"),
        ("/admin/audit?since=2026-03-10T00:00Z&until=2026-03-09T00:00Z", "until"),
        ("/admin/audit?action=", "action"),  # listed every entry, as if none were named
        ("/admin/audit?actor=", "actor"),
    ):
        refused = admin(gw, "GET", path)
        assert refused.status == 400, (path, refused.body)
        assert refused.json()["error"]["param"] == param, (path, refused.body)
    for flag, ids in (("true", {kept, gone}), ("YES", {kept, gone}), ("1", {kept, gone})):
        listed = admin(gw, "GET", f"/admin/keys?include_revoked={flag}").json()["data"]
        assert {k["id"] for k in listed} == ids, flag
    for flag in ("false", "no", "0"):
        listed = admin(gw, "GET", f"/admin/keys?include_revoked={flag}").json()["data"]
        assert {k["id"] for k in listed} == {kept}, flag
    assert admin(gw, "GET", "/admin/loops?all=false").status == 200
    same = "2026-03-10T00:00:00Z"
    assert admin(gw, "GET", f"/admin/audit?since={same}&until={same}").json()["data"] == []


def test_a_key_stored_expiring_in_the_year_10000_lists_and_revokes(gw: GatewayHarness) -> None:
    """A key stored, before such expiries were refused, to expire in the year 10000 (UTC)
    made every key listing a 500; it now lists as expiring at the last moment a time holds,
    answers requests, and can be revoked."""
    secret = gw.create_key(name="old-row")
    key = gw.call(gw.gateway.storage.key_by_id(gw.last_key_id))
    assert key is not None
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-5)))
    gw.call(gw.gateway.storage.update_key(dataclasses.replace(key, expires_at=late)))
    listed = admin(gw, "GET", "/admin/keys")
    assert listed.status == 200, listed.body
    assert [k["expires_at"] for k in listed.json()["data"]] == ["9999-12-31T23:59:59.999999+00:00"]
    embed(gw, secret)
    assert admin(gw, "POST", f"/admin/keys/{key.id}/revoke").status == 200


def test_an_empty_user_service_or_team_is_a_400(gw: GatewayHarness) -> None:
    """``user: ""`` (``keys create --user ''``) made a key whose user was the empty string:
    a member ``""`` of every per-user budget and a user ``""`` in reports, while ``keys
    update --user ''`` clears the user. An empty or blank label is now a 400 naming it
    (null, or leaving it out, is none), on create and on update."""
    key_id = admin(gw, "POST", "/admin/keys", {"name": "kept", "user": "ann"}).json()["id"]
    for field in ("user", "service", "team"):
        for value in ("", "  "):
            created = admin(gw, "POST", "/admin/keys", {"name": "odd", field: value})
            assert created.status == 400, (field, value, created.body)
            assert created.json()["error"]["param"] == field
            patched = admin(gw, "PATCH", f"/admin/keys/{key_id}", {field: value})
            assert patched.status == 400, (field, value, patched.body)
            assert patched.json()["error"]["param"] == field
    listed = admin(gw, "GET", "/admin/keys").json()["data"]
    assert [(k["name"], k["user"], k["service"], k["team"]) for k in listed] == [
        ("kept", "ann", None, None)
    ]
    cleared = admin(gw, "PATCH", f"/admin/keys/{key_id}", {"user": None})
    assert cleared.json()["user"] is None


def test_a_period_too_long_for_a_window_is_a_400(gw: GatewayHarness) -> None:
    """A key's ``budget_period: rolling:17520000h`` (2,000 years) or rate ``10/99999999day``
    was stored, and then each request of the key and every ``GET /admin/budgets`` was a 500
    (its window overflowed `datetime`); ``rolling:999999999999d`` or ``10/9999999999999h``
    was a 500 on creating the key. Each is now a 400 naming the field."""
    key_id = admin(gw, "POST", "/admin/keys", {"name": "kept"}).json()["id"]
    cases = (
        ({"budget_usd": "1", "budget_period": "rolling:17520000h"}, "budget_period"),
        ({"budget_usd": "1", "budget_period": "rolling:999999999999d"}, "budget_period"),
        ({"limit_requests": "10/99999999day"}, "limit_requests"),
        ({"limit_tokens": "10/9999999999999h"}, "limit_tokens"),
    )
    refused_on_create_and_update(gw, key_id, cases, "at most")
    longest = {"budget_usd": "1", "budget_period": "rolling:3650d", "limit_requests": "9/3650d"}
    assert admin(gw, "PATCH", f"/admin/keys/{key_id}", longest).status == 200
    assert admin(gw, "GET", "/admin/budgets").status == 200


def test_labels_with_surrounding_spaces_are_kept_as_budgets_match_them(
    gw: GatewayHarness,
) -> None:
    """A key's name was stripped of surrounding spaces, but not its user, service, team or
    tags: ``user: " ann"`` was a user no per-user budget or report of ``ann`` counted, and
    a tag ``"prod "`` escaped a ``scope: tag, match: prod`` budget. They are now stripped
    as the name is, on create and on update."""
    body = {"name": " spaced ", "user": " ann", "service": "etl ", "tags": [" prod", "eu "]}
    created = admin(gw, "POST", "/admin/keys", body)
    assert created.status == 201, created.body
    made = created.json()
    assert (made["name"], made["user"], made["service"], made["tags"]) == (
        "spaced",
        "ann",
        "etl",
        ["prod", "eu"],
    )
    changed = admin(gw, "PATCH", f"/admin/keys/{made['id']}", {"user": "bob ", "tags": [" x"]})
    assert (changed.json()["user"], changed.json()["tags"]) == ("bob", ["x"])
    team = admin(gw, "PATCH", f"/admin/keys/{made['id']}", {"team": " ml "})
    assert (team.json()["team"], team.json()["org"]) == ("ml", "acme")
