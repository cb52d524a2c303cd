"""``spendgate me``: what the gateway tells a key about itself (GET /v1/spendgate/me).
Over HTTP with the standard library only: it needs no config, storage or server code."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from spendgate.cli.statusline import base_url
from spendgate.text import escape

PATH = "/v1/spendgate/me"


@click.command()
@click.option(
    "--key",
    envvar="SPENDGATE_KEY",
    required=True,
    help="Your spendgate key (sk-sg-...); or the environment variable SPENDGATE_KEY.",
)
@click.option(
    "--url",
    envvar="SPENDGATE_URL",
    default="http://127.0.0.1:8700",
    show_default=True,
    help="The gateway's address; or SPENDGATE_URL (a trailing /v1 is dropped).",
)
@click.option(
    "--limit",
    type=click.IntRange(1, 100),
    default=10,
    show_default=True,
    help="How many of your last requests to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the gateway's JSON as it is.")
def me(key: str, url: str, limit: int, as_json: bool) -> None:
    """Your key's identity, the budgets and limits that apply to it, and its last requests."""
    address = f"{base_url(url)}{PATH}?limit={limit}"  # an SDK's base URL (.../v1) works too
    try:
        request = urllib.request.Request(address, headers={"authorization": f"Bearer {key}"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            data = json.loads(response.read())
    except urllib.error.HTTPError as failed:
        raise click.ClickException(f"{address}: {failed.code} {_message(failed.read())}") from None
    except (urllib.error.URLError, OSError) as failed:
        raise click.ClickException(f"cannot reach {address}: {failed}") from None
    except ValueError as failed:  # not a URL urllib can use: "localhost:8700", "http://[::1"
        raise click.ClickException(
            f"--url {url!r} is not a gateway address like http://127.0.0.1:8700 ({failed})"
        ) from None
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(render(data))


def _message(body: bytes) -> str:
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body.decode("utf-8", "replace")[:300]


def render(data: dict[str, Any]) -> str:
    """The answer as text; every name in it escaped (`spendgate.text.escape`): a key stored
    before names were checked may hold a character a terminal would obey."""
    key = data["key"]
    shown = _shown
    lines = [
        f"Key {shown(key['id'])} ({shown(key['name'])}, {shown(key['hint'])}): "
        f"{shown(key['state'])}"
    ]
    for field in ("user", "team", "service", "org"):
        if key.get(field):
            lines.append(f"  {field}: {shown(key[field])}")
    if key.get("tags"):
        lines.append(f"  tags: {', '.join(shown(tag) for tag in key['tags'])}")
    budgets = data["budgets"]
    lines.append("")
    lines.append("Budgets and limits" if budgets else "No budget or limit applies to this key.")
    for view in budgets:
        amounts = view["display"]
        resets = view["resets_at"] or "never"
        lines.append(
            f"  {shown(view['name'])} ({view['scope']} {shown(view['member'])}, "
            f"{view['period']}): {amounts['spent']} spent of {amounts['limit']}, "
            f"{amounts['reserved']} reserved, {amounts['remaining']} left; {view['state']}; "
            f"resets {resets}"
        )
    rows = data["requests"]
    lines.append("")
    lines.append(f"Last {len(rows)} requests" if rows else "No requests yet.")
    for row in rows:
        refused = f" refused by {shown(row['blocked_by'])}" if row["blocked_by"] else ""
        lines.append(
            f"  {row['time']}  {shown(row['model'])}  {row['status']}  {row['cost']}{refused}"
        )
    return "\n".join(lines)


def _shown(value: object) -> str:
    return escape(str(value))
