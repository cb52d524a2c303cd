"""The web dashboard driven in headless Chromium (Debian's ``chromium``, through Playwright)
against a real gateway on loopback with a known workload: log in, the charts and tables
show the ledger's numbers, a key created in the browser works and stops working once
revoked there, the page is keyboard-usable and fits a phone. Screenshots are kept under
``build/test-artifacts/ui`` (the CI keeps the folder)."""

from __future__ import annotations

import json
import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import openai
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from e2e.key_world import T0
from e2e.process import http_request
from harness import GatewayHarness
from spendgate.clock import ManualClock
from spendgate.money import format_dollars

ADMIN = "ui-admin-token-7f3a"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "ui"
# (team, user, requests, max_tokens): a workload whose spend differs per team and user.
WORKLOAD = [
    ("ml", "ann", 3, 40),
    ("ml", "bob", 1, 20),
    ("web", "cy", 2, 60),
    ("platform", "dee", 1, 10),
]


class _Receiver(BaseHTTPRequestHandler):
    """A webhook receiver on loopback: keeps every alert posted to it."""

    posts: ClassVar[list[Any]] = []

    def do_POST(self) -> None:
        length = int(self.headers["content-length"])
        self.posts.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _configure(receiver: str) -> Callable[[dict[str, Any]], None]:
    def configure(data: dict[str, Any]) -> None:
        budget = {"name": "ml-monthly", "scope": "team", "match": "ml", "period": "monthly"}
        data["budgets"] = [{**budget, "limit_usd": "0.0002"}]  # the workload uses ~41 %
        data["alerts"] = {
            "channels": {"ops": {"kind": "webhook", "url": receiver}},
            "budgets": [{"budget": "ml-monthly", "thresholds": [0.25, 0.4], "channels": ["ops"]}],
        }

    return configure


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayHarness]:
    folder = tmp_path_factory.mktemp("ui")
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    harness = GatewayHarness(
        folder / "spendgate.db",
        configure=_configure(f"http://127.0.0.1:{receiver.server_port}/hook"),
        env={"SPENDGATE_ADMIN_TOKEN": ADMIN},
        clock=ManualClock(T0),
    ).start()
    try:
        for team, user, requests, max_tokens in WORKLOAD:
            secret = harness.create_key(name=f"{user}-laptop", team=team, user=user)
            with harness.sdk_client("openai", secret, max_retries=0) as client:
                for n in range(requests):
                    client.chat.completions.create(
                        model="gpt-4o-mini",
                        max_tokens=max_tokens,
                        messages=[{"role": "user", "content": f"request {n} of {user}"}],
                    )
        assert harness.wait_for(lambda: len(_Receiver.posts) == 2, timeout=30), _Receiver.posts
        yield harness
    finally:
        harness.stop()
        receiver.shutdown()
        receiver.server_close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: `make browser` installs it"
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
    yield chromium
    chromium.close()


@pytest.fixture
def page(browser: Browser, world: GatewayHarness) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    offsite: list[str] = []
    page.on("request", lambda r: None if r.url.startswith(world.url) else offsite.append(r.url))
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    yield page
    context.close()
    assert offsite == [], f"the dashboard fetched from elsewhere: {offsite}"
    assert errors == [], f"script errors: {errors}"


def login(page: Page, world: GatewayHarness, token: str = ADMIN) -> None:
    page.goto(world.url + "/ui/")
    expect(page).to_have_url(world.url + "/ui/login")
    page.get_by_label("Admin token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def loaded(page: Page) -> None:
    expect(page.locator("body")).to_have_attribute("data-loaded", "true")


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def spend_by(world: GatewayHarness, field: str) -> dict[str, int]:
    sums: dict[str, int] = defaultdict(int)
    for row in world.ledger():
        sums[getattr(row, field)] += row.cost_nanos
    return dict(sums)


def usd(nanos: int) -> str:
    whole, fraction = divmod(nanos, 10**9)
    digits = f"{fraction:09d}".rstrip("0").ljust(2, "0")
    return f"${whole:,}.{digits}"


def test_a_wrong_token_is_refused_and_the_admin_token_signs_in(
    page: Page, world: GatewayHarness
) -> None:
    login(page, world, token="not-the-token")
    expect(page).to_have_url(world.url + "/ui/login?failed=invalid_api_key")
    expect(page.get_by_role("alert")).to_contain_text("not accepted")
    page.get_by_label("Admin token").fill(ADMIN)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(world.url + "/ui/")
    loaded(page)
    shot(page, "dashboard-1280x800")
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(world.url + "/ui/login")
    page.goto(world.url + "/ui/")
    expect(page).to_have_url(world.url + "/ui/login")  # the session is gone


def test_the_charts_and_tables_show_the_ledger(page: Page, world: GatewayHarness) -> None:
    teams = spend_by(world, "team")
    users = spend_by(world, "user")
    assert len(set(teams.values())) == 3, "the workload must tell the teams apart"
    login(page, world)
    loaded(page)
    chart = page.evaluate(
        "() => { const c = Chart.getChart('team-chart');"
        " return {labels: c.data.labels, values: c.data.datasets[0].data}; }"
    )
    shown = dict(zip(chart["labels"], chart["values"], strict=True))
    assert shown == {team: nanos / 1e9 for team, nanos in teams.items()}
    series = page.evaluate(
        "() => { const c = Chart.getChart('series-chart'); return {labels: c.data.labels,"
        " sets: c.data.datasets.map(d => [d.label, d.data])}; }"
    )
    day = T0.date().isoformat()  # every request of the workload ran at the gateway's T0
    assert series["labels"] == [day]
    assert {label: values for label, values in series["sets"]} == {
        team: [nanos / 1e9] for team, nanos in teams.items()
    }
    team_table = page.locator("#team-table")
    for team, nanos in teams.items():
        expect(team_table.get_by_role("row", name=team)).to_contain_text(usd(nanos))
    total = page.locator("#totals")
    expect(total).to_contain_text(usd(sum(teams.values())))
    expect(total).to_contain_text(str(len(world.ledger())))
    spenders = page.locator("#spender-list tbody tr")
    ranked = sorted(users.items(), key=lambda item: -item[1])
    expect(spenders).to_have_count(len(ranked))
    for position, (user, nanos) in enumerate(ranked):
        expect(spenders.nth(position)).to_contain_text(user)
        expect(spenders.nth(position)).to_contain_text(usd(nanos))
    budget = page.locator("#budget-list tbody tr").filter(has_text="ml-monthly")
    spent = format_dollars(teams["ml"], places=6)
    expect(budget).to_contain_text(spent)
    expect(budget.get_by_role("img")).to_have_attribute(
        "aria-label", re.compile(re.escape(f"{spent} spent, $0.000000 reserved of $0.000200"))
    )
    alerts = page.locator("#alert-list tbody tr")
    expect(alerts).to_have_count(2)
    for row in alerts.all():
        expect(row).to_contain_text("ml-monthly")
        expect(row).to_contain_text("delivered")
    shot(page, "charts")


def test_a_key_created_in_the_browser_works_until_revoked_there(
    page: Page, world: GatewayHarness
) -> None:
    login(page, world)
    loaded(page)
    form = page.locator("#key-form")
    form.get_by_label("Name").fill("made-in-ui")
    form.get_by_label("Team").fill("web")
    form.get_by_label("User").fill("eve")
    form.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").inner_text()
    assert secret.startswith("sk-sg-")
    with world.sdk_client("openai", secret, max_retries=0) as client:
        answer = client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert answer.choices
    row = page.locator("#key-list tbody tr").filter(has_text="made-in-ui")
    expect(row).to_contain_text("web")
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Revoke made-in-ui").click()
    expect(page.locator("#status")).to_have_text("Key made-in-ui revoked.")
    expect(page.locator("#key-list tbody tr").filter(has_text="made-in-ui")).to_have_count(0)
    with (
        world.sdk_client("openai", secret, max_retries=0) as client,
        pytest.raises(openai.AuthenticationError),
    ):
        client.chat.completions.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )


def _admin_call(world: GatewayHarness, method: str, path: str, body: Any) -> Any:
    answer = http_request(method, world.url + path, body=body, token=ADMIN)
    assert answer.status in (200, 201), answer.body
    return answer.json()


def test_a_team_admin_sees_and_changes_only_its_team(page: Page, world: GatewayHarness) -> None:
    token = _admin_call(
        world, "POST", "/admin/tokens", {"name": "wendy", "role": "team_admin", "team": "web"}
    )["token"]
    ml_key = next(
        k for k in _admin_call(world, "GET", "/admin/keys", None)["data"] if k["team"] == "ml"
    )
    login(page, world, token=token)
    loaded(page)
    expect(page.locator("#whoami")).to_have_text("wendy · team admin of web")
    chart = page.evaluate("() => Chart.getChart('team-chart').data.labels")
    assert chart == ["web"]
    teams = {row.inner_text().split("\t")[2] for row in page.locator("#key-list tbody tr").all()}
    assert teams == {"web"}
    expect(page.locator("#budget-list")).not_to_contain_text("ml-monthly")
    expect(page.locator("#spender-list")).not_to_contain_text("ann")
    # The page's own session, used as the dashboard's script would, on another team's key:
    status = page.evaluate(
        """async (id) => (await fetch(`/admin/keys/${id}/revoke`, {method: "POST",
             headers: {"x-spendgate-ui": "1", "content-type": "application/json"},
             body: "{}"})).status""",
        ml_key["id"],
    )
    assert status == 403
    assert _admin_call(world, "GET", f"/admin/keys/{ml_key['id']}", None)["revoked_at"] is None
    shot(page, "team-admin")


def test_the_page_is_keyboard_usable(page: Page, world: GatewayHarness) -> None:
    login(page, world)
    loaded(page)
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Skip to content")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Spend")
    page.keyboard.press("Tab")
    expect(page.locator(":focus")).to_have_text("Budgets")
    page.keyboard.press("Enter")
    expect(page).to_have_url(world.url + "/ui/#budgets")
    for field in ("Period", "Over time, by"):
        assert page.get_by_label(field, exact=True).count() == 1, f"{field} has no label"


def test_the_dashboard_fits_a_phone(browser: Browser, world: GatewayHarness) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        login(page, world)
        loaded(page)
        overflow = page.evaluate(
            "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
        shot(page, "dashboard-phone-390x844")
    finally:
        context.close()


def test_an_admin_sets_a_budget_limit_and_the_audit_log_shows_it(
    page: Page, world: GatewayHarness
) -> None:
    login(page, world)
    loaded(page)
    budget = page.locator("#budget-list tbody tr").filter(has_text="ml-monthly")
    page.once("dialog", lambda dialog: dialog.accept("0.0005"))
    try:
        budget.get_by_role("button", name="Set limit").click()
        expect(page.locator("#status")).to_have_text("Limit of ml-monthly set to 0.0005.")
        expect(budget).to_contain_text("$0.000500")
        [override] = [
            b
            for b in _admin_call(world, "GET", "/admin/budgets", None)["data"]
            if b["name"] == "ml-monthly"
        ]
        assert override["limit"] == 500_000  # nano-dollars, in force through the API too
        entry = page.locator("#audit-list tbody tr").filter(has_text="budget.set_limit")
        expect(entry).to_contain_text("env (org_admin)")
        expect(entry).to_contain_text("ml-monthly")
    finally:
        _admin_call(world, "DELETE", "/admin/budgets/ml-monthly/limit", None)
