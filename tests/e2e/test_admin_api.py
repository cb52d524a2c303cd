"""The admin HTTP API: its credential, the key lifecycle, and usage reports that match the
ledger to the nano-dollar. In-process gateway (tests/harness.py) with an admin token in
its environment; requests with stdlib HTTP and the real ``openai``/``anthropic`` SDKs."""

from __future__ import annotations

import csv
import dataclasses
import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from e2e.process import HttpResult, http_request
from harness import GatewayHarness
from spendgate.domain.identity import hash_secret
from spendgate.domain.ledger import LedgerRow
from spendgate.domain.reports import CSV_HEADER, dollars

TOKEN = "adm-0123456789-secret"


@pytest.fixture(scope="module")
def admin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    harness = GatewayHarness(
        tmp_path_factory.mktemp("admin") / "spendgate.db",
        env={"SPENDGATE_ADMIN_TOKEN": TOKEN},
    ).start()
    try:
        yield harness
    finally:
        harness.stop()


def call(
    harness: GatewayHarness,
    method: str,
    path: str,
    body: Any = None,
    *,
    token: str | None = TOKEN,
    headers: dict[str, str] | None = None,
) -> HttpResult:
    return http_request(method, harness.url + path, body=body, token=token, headers=headers)


def chat(harness: GatewayHarness, secret: str, **extra: Any) -> Any:
    with openai.OpenAI(
        base_url=harness.openai_base_url, api_key=secret, max_retries=0, timeout=10
    ) as client:
        return client.chat.completions.create(
            model=extra.pop("model", "gpt-4o-mini"),
            messages=[{"role": "user", "content": "Say something about spend."}],
            **extra,
        )


# ----------------------------------------------------------------------------- credential

ROUTES = [
    ("POST", "/admin/keys", {"name": "x"}),
    ("GET", "/admin/keys", None),
    ("GET", "/admin/keys/key_0000", None),
    ("POST", "/admin/keys/key_0000/revoke", None),
    ("POST", "/admin/keys/key_0000/rotate", None),
    ("GET", "/admin/usage", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ROUTES)
def test_every_admin_route_needs_the_admin_token(
    admin: GatewayHarness, method: str, path: str, body: Any
) -> None:
    for token, headers in (
        (None, None),
        ("wrong-token", None),
        (None, {"authorization": f"Basic {TOKEN}"}),
        (None, {"authorization": TOKEN}),
        (None, {"x-api-key": TOKEN}),
    ):
        result = call(admin, method, path, body, token=token, headers=headers)
        assert result.status == 401, (token, headers, result.body)
        error = result.json()["error"]
        assert error["code"] == "invalid_api_key"
        assert "admin token" in error["message"]
        assert result.headers["x-should-retry"] == "false"
    assert not admin.ledger()


def test_a_virtual_key_is_not_an_admin_token(admin: GatewayHarness) -> None:
    secret = admin.create_key(name="not-admin")
    assert call(admin, "GET", "/admin/keys", token=secret).status == 401


def test_a_non_ascii_token_is_refused_not_an_internal_error(admin: GatewayHarness) -> None:
    for path in ("/admin/keys", "/admin/usage"):
        result = call(
            admin, "GET", path, token=None, headers={"authorization": "Bearer t\u00f6ken"}
        )
        assert result.status == 401, result.body


def test_without_a_token_configured_the_admin_api_says_which_variable_to_set(
    gw: GatewayHarness,
) -> None:
    # The shared `gw` harness has no SPENDGATE_ADMIN_TOKEN in its environment.
    assert gw.gateway.admin_token is None
    for method, path, body in ROUTES:
        result = call(gw, method, path, body, token="anything")
        assert result.status == 403, result.body
        error = result.json()["error"]
        assert error["code"] == "admin_disabled"
        assert "SPENDGATE_ADMIN_TOKEN" in error["message"]


def test_the_disabled_message_names_the_configured_variable(tmp_path: Path) -> None:
    def configure(data: dict[str, Any]) -> None:
        data["server"]["admin_token_env"] = "ACME_SPENDGATE_ADMIN"

    harness = GatewayHarness(
        tmp_path / "spendgate.db", configure=configure, env={"SPENDGATE_ADMIN_TOKEN": TOKEN}
    ).start()
    try:
        result = call(harness, "GET", "/admin/keys")
        assert result.status == 403
        assert "ACME_SPENDGATE_ADMIN" in result.json()["error"]["message"]
    finally:
        harness.stop()


# ----------------------------------------------------------------------------- keys


def test_key_lifecycle_create_list_show_rotate_revoke(admin: GatewayHarness) -> None:
    created = call(
        admin,
        "POST",
        "/admin/keys",
        {
            "name": "billing-service",
            "team": "ml",
            "service": "billing",
            "user": "alice",
            "tags": ["prod", "eu"],
            "allowed_models": ["gpt-4o*"],
        },
    )
    assert created.status == 201, created.body
    key = created.json()
    secret, key_id = key.pop("key"), key["id"]
    assert secret.startswith("sk-sg-")
    assert key["hint"].endswith(secret[-4:])
    assert secret not in key["hint"]
    assert key["org"] == "acme"
    assert (key["team"], key["service"], key["user"]) == ("ml", "billing", "alice")
    assert key["tags"] == ["prod", "eu"]
    assert key["allowed_models"] == ["gpt-4o*"]
    assert key["revoked_at"] is None
    assert "key_hash" not in key

    # The secret works at once with the real SDK, under the key's identity.
    completion = chat(admin, secret)
    assert completion.choices[0].message.content
    rows = admin.ledger(key_id)
    assert len(rows) == 1
    assert (rows[0].team, rows[0].service, rows[0].user, rows[0].org) == (
        "ml",
        "billing",
        "alice",
        "acme",
    )

    # Listing and showing never expose a secret or a hash.
    listing = call(admin, "GET", "/admin/keys")
    assert listing.status == 200
    assert secret.encode() not in listing.body
    assert hash_secret(secret).encode() not in listing.body
    entries = listing.json()["data"]
    for entry in entries:
        assert "key" not in entry
        assert "key_hash" not in entry
    assert [e for e in entries if e["id"] == key_id] == [key]
    shown = call(admin, "GET", f"/admin/keys/{key_id}")
    assert shown.status == 200
    assert shown.json() == key

    # Rotate: same identity, new secret; the old one stops working at once.
    rotated = call(admin, "POST", f"/admin/keys/{key_id}/rotate")
    assert rotated.status == 200, rotated.body
    after = rotated.json()
    new_secret = after.pop("key")
    assert new_secret != secret
    assert new_secret.startswith("sk-sg-")
    assert after["id"] == key_id
    assert after["hint"] != key["hint"]
    assert {k: v for k, v in after.items() if k != "hint"} == {
        k: v for k, v in key.items() if k != "hint"
    }
    with pytest.raises(openai.AuthenticationError):
        chat(admin, secret)
    assert chat(admin, new_secret).choices[0].message.content
    assert hash_secret(new_secret).encode() not in call(admin, "GET", "/admin/keys").body

    # Revoke: the key stops working and leaves the default listing.
    revoked = call(admin, "POST", f"/admin/keys/{key_id}/revoke")
    assert revoked.status == 200
    assert revoked.json()["revoked_at"] is not None
    assert "key" not in revoked.json()
    with pytest.raises(openai.AuthenticationError) as refused:
        chat(admin, new_secret)
    assert "revoked" in str(refused.value)
    active = call(admin, "GET", "/admin/keys").json()["data"]
    assert key_id not in {e["id"] for e in active}
    everything = call(admin, "GET", "/admin/keys?include_revoked=true").json()["data"]
    assert [e["revoked_at"] for e in everything if e["id"] == key_id] == [
        revoked.json()["revoked_at"]
    ]
    again = call(admin, "POST", f"/admin/keys/{key_id}/revoke")
    assert again.status == 200
    assert again.json() == revoked.json()
    cannot = call(admin, "POST", f"/admin/keys/{key_id}/rotate")
    assert cannot.status == 400
    assert "revoked" in cannot.json()["error"]["message"]
    assert len(admin.ledger(key_id)) == 2  # the two answered requests, no refusals


def test_unknown_key_ids_are_404(admin: GatewayHarness) -> None:
    for method, path in (
        ("GET", "/admin/keys/key_doesnotexist"),
        ("POST", "/admin/keys/key_doesnotexist/revoke"),
        ("POST", "/admin/keys/key_doesnotexist/rotate"),
    ):
        result = call(admin, method, path)
        assert result.status == 404
        assert "key_doesnotexist" in result.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"name": "x", "colour": "red"}, "colour", ["colour"]),
        ({"name": "x", "team": "marketing"}, "team", ["marketing", "ml", "platform", "web"]),
        ({"team": "ml"}, "name", ["name"]),
        ({"name": "   "}, "name", ["name"]),
        ({"name": 7}, "name", ["name"]),
        ({"name": "x", "tags": "prod"}, "tags", ["tags"]),
        ({"name": "x", "tags": ["a,b"]}, "tags", ["comma"]),
        ({"name": "x", "user": 5}, "user", ["user"]),
        ({"name": "x", "expires_at": "tomorrow"}, "expires_at", ["expires_at"]),
        ({"name": "x", "expires_at": "2030-01-01T00:00:00"}, "expires_at", ["time zone"]),
        # What reports print back must be plain text: no control or BIDI character.
        ({"name": "eve\x1b[2J"}, "name", ["control", "U+001B at position 3"]),
        ({"name": "osc\x1b]0;pwned"}, "name", ["U+001B"]),
        ({"name": "x", "user": "fake\n  1 row"}, "user", ["U+000A"]),
        ({"name": "x", "service": "cr\rsvc"}, "service", ["U+000D"]),
        ({"name": "x", "user": "bidi\u202eevil"}, "user", ["BIDI", "U+202E"]),
        ({"name": "x", "service": "c1\x9b2J"}, "service", ["U+009B"]),
        ({"name": "x", "tags": ["ok", "t\x07"]}, "tags", ["U+0007"]),
        ({"name": "x", "allowed_models": ["gpt\x1b*"]}, "allowed_models", ["U+001B"]),
        ({"name": "n" * 201}, "name", ["201", "at most 200"]),
        ({"name": "x", "user": "u" * 201}, "user", ["at most 200"]),
        (
            {"name": "x", "expires_at": "2020-01-01T00:00:00+00:00"},
            "expires_at",
            ["expires_at", "not in the future"],
        ),
    ],
)
def test_invalid_key_specs_are_400_naming_the_field(
    admin: GatewayHarness, body: dict[str, Any], param: str, words: list[str]
) -> None:
    before = len(call(admin, "GET", "/admin/keys?include_revoked=true").json()["data"])
    result = call(admin, "POST", "/admin/keys", body)
    assert result.status == 400, result.body
    error = result.json()["error"]
    assert error["param"] == param
    for word in words:
        assert word in error["message"]
    after = len(call(admin, "GET", "/admin/keys?include_revoked=true").json()["data"])
    assert after == before


def test_a_team_with_a_control_character_is_refused_even_when_no_team_is_declared(
    tmp_path: Path,
) -> None:
    harness = GatewayHarness(
        tmp_path / "spendgate.db",
        configure=lambda data: data.update(orgs={}),
        env={"SPENDGATE_ADMIN_TOKEN": TOKEN},
    ).start()
    try:
        assert call(harness, "POST", "/admin/keys", {"name": "x", "team": "any"}).status == 201
        result = call(harness, "POST", "/admin/keys", {"name": "x", "team": "t\x1b[2J"})
        assert result.status == 400
        assert result.json()["error"]["param"] == "team"
        assert len(call(harness, "GET", "/admin/keys").json()["data"]) == 1
    finally:
        harness.stop()


def test_a_key_expiring_soon_is_created_and_an_expired_one_is_not_rotated(
    admin: GatewayHarness,
) -> None:
    soon = (datetime.now(UTC) + timedelta(seconds=30)).isoformat()
    created = call(admin, "POST", "/admin/keys", {"name": "brief", "expires_at": soon})
    assert created.status == 201, created.body
    key_id = created.json()["id"]
    # Its expiry passes while it is stored (moved back here rather than waited for).
    key = admin.call(admin.gateway.keys.get(key_id))
    past = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=1)
    admin.call(admin.gateway.storage.update_key(dataclasses.replace(key, expires_at=past)))
    result = call(admin, "POST", f"/admin/keys/{key_id}/rotate")
    assert result.status == 400
    assert "expired" in result.json()["error"]["message"]
    assert admin.call(admin.gateway.keys.get(key_id)).key_hash == key.key_hash


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b'"name"'])
def test_a_body_that_is_not_a_json_object_is_400(admin: GatewayHarness, raw: bytes) -> None:
    result = call(admin, "POST", "/admin/keys", raw, headers={"content-type": "application/json"})
    assert result.status == 400
    assert result.json()["error"]["type"] == "invalid_request_error"


# ----------------------------------------------------------------------------- usage


def _expected_by_team(rows: list[LedgerRow]) -> dict[str | None, dict[str, int]]:
    out: dict[str | None, dict[str, int]] = {}
    for row in rows:
        group = out.setdefault(
            row.team,
            {
                "requests": 0,
                "input_tokens": 0,
                "cached_input_tokens": 0,
                "cache_write_tokens": 0,
                "output_tokens": 0,
                "reasoning_tokens": 0,
                "cost_nanos": 0,
                "errors": 0,
                "estimated": 0,
            },
        )
        group["requests"] += 1
        for name in (
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "cost_nanos",
        ):
            group[name] += getattr(row, name)
        group["errors"] += row.status >= 400
        group["estimated"] += row.usage_estimated
    return out


def _bp(part: int, total: int) -> int:
    return (2 * part * 10_000 + total) // (2 * total)


def test_usage_report_matches_the_ledger_exactly(tmp_path: Path) -> None:
    day = datetime.now(UTC).date()
    harness = GatewayHarness(
        tmp_path / "spendgate.db", env={"SPENDGATE_ADMIN_TOKEN": TOKEN}
    ).start()
    try:
        ml = harness.create_key(name="ml-key", team="ml", user="alice")
        web = harness.create_key(name="web-key", team="web", user="bob")
        platform = harness.create_key(name="platform-key", team="platform")
        loose = harness.create_key(name="no-team")
        for n in (40, 50, 60):
            chat(harness, ml, model="gpt-4o", extra_headers={"x-sim-output-tokens": str(n)})
        with anthropic.Anthropic(
            base_url=harness.url, api_key=web, max_retries=0, timeout=10
        ) as claude:
            for n in (30, 35):
                claude.messages.create(
                    model="claude-haiku-4-5",
                    max_tokens=100,
                    messages=[{"role": "user", "content": "hello from web"}],
                    extra_headers={"x-sim-output-tokens": str(n)},
                )
            stream = claude.messages.create(
                model="claude-haiku-4-5",
                max_tokens=100,
                messages=[{"role": "user", "content": "a streamed one"}],
                stream=True,
            )
            with stream:
                assert [event.type for event in stream][-1] == "message_stop"
        chat(harness, platform, extra_headers={"x-sim-output-tokens": "10"})
        chat(harness, loose, extra_headers={"x-sim-output-tokens": "5"})

        result = call(harness, "GET", "/admin/usage?group_by=team&period=today&top=2")
        assert result.status == 200, result.body
        report = result.json()
        rows = harness.ledger()
        assert len(rows) == 8

        expected = _expected_by_team(rows)
        ranked = sorted(
            expected.items(), key=lambda kv: (-kv[1]["cost_nanos"], kv[0] is None, kv[0] or "")
        )
        total = sum(g["cost_nanos"] for g in expected.values())
        assert report["group_by"] == "team"
        assert report["period"] == "today"
        assert report["total_cost_nanos"] == total
        assert report["total_cost_usd"] == dollars(total)
        assert report["total_groups"] == 4
        assert [g["group"] for g in report["top"]] == [ranked[0][0], ranked[1][0]]
        for rank, (entry, (team, sums)) in enumerate(zip(report["top"], ranked, strict=False), 1):
            assert entry["rank"] == rank
            assert entry["group"] == team
            assert {k: entry[k] for k in sums} == sums
            assert entry["cost_usd"] == dollars(sums["cost_nanos"])
            assert entry["share_bp"] == _bp(sums["cost_nanos"], total)
        rest = report["rest"]
        assert rest["groups"] == 2
        for name in ("requests", "input_tokens", "output_tokens", "cost_nanos", "errors"):
            assert rest[name] == sum(sums[name] for _, sums in ranked[2:])
        assert rest["share_bp"] == _bp(rest["cost_nanos"], total)
        top_cost = sum(sums["cost_nanos"] for _, sums in ranked[:2])
        assert report["top_share_bp"] == _bp(top_cost, total)
        assert abs(report["top_share_bp"] + rest["share_bp"] - 10_000) <= 1
        assert abs(sum(e["share_bp"] for e in report["top"]) - report["top_share_bp"]) <= 1

        # CSV: a header and one row per group (not only the top N), in the report's order.
        exported = call(harness, "GET", "/admin/usage?group_by=team&period=today&format=csv")
        assert exported.status == 200
        assert exported.headers["content-type"].startswith("text/csv")
        lines = list(csv.reader(io.StringIO(exported.body.decode())))
        assert tuple(lines[0]) == CSV_HEADER
        assert [line[0] for line in lines[1:]] == [team or "" for team, _ in ranked]
        for line, (_team, sums) in zip(lines[1:], ranked, strict=True):
            record = dict(zip(CSV_HEADER, line, strict=True))
            assert int(record["requests"]) == sums["requests"]
            assert int(record["output_tokens"]) == sums["output_tokens"]
            assert record["cost_usd"] == dollars(sums["cost_nanos"])

        # A finished request's spend shows in the report at once: no flush interval.
        chat(harness, ml, extra_headers={"x-sim-output-tokens": "7"})
        finished = time.monotonic()
        fresh = call(harness, "GET", "/admin/usage?group_by=team&period=today&top=10").json()
        visible_s = time.monotonic() - finished
        by_team = {entry["group"]: entry for entry in fresh["top"]}
        assert by_team["ml"]["requests"] == expected["ml"]["requests"] + 1
        assert fresh["total_cost_nanos"] == sum(row.cost_nanos for row in harness.ledger())
        assert visible_s < 1.0
    finally:
        harness.stop()
    if datetime.now(UTC).date() != day:
        pytest.skip("the UTC day changed during the test; 'today' moved under it")


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("group_by=colour", "group_by"),
        ("period=fortnight", "period"),
        ("top=three", "top"),
        ("top=-1", "top"),
    ],
)
def test_bad_usage_queries_are_400_naming_the_parameter(
    admin: GatewayHarness, query: str, param: str
) -> None:
    result = call(admin, "GET", f"/admin/usage?{query}")
    assert result.status == 400
    assert result.json()["error"]["param"] == param
