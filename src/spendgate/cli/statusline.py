"""``spendgate statusline``: one short line with the caller's remaining budget, for Claude
Code's ``statusLine`` setting (it runs a command with a JSON object on stdin and shows the
first line it prints) or a shell prompt. Over HTTP with the standard library only, with a
short timeout; it always prints one line and exits 0, also when the gateway is down.

``examples/statusline.sh`` does the same with sh, curl and python3 only (no spendgate
installed); both print the same line for the same answer (`summarize`)."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from datetime import UTC, date, datetime
from decimal import ROUND_DOWN, Decimal
from typing import Any

import click

PATH = "/v1/spendgate/me?limit=1"
KEY_ENV = ["SPENDGATE_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"]
URL_ENV = ["SPENDGATE_URL", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"]
UNREACHABLE = "sg: gateway unreachable"


def base_url(url: str) -> str:
    """An SDK base URL (``.../v1``) or the gateway's address, as the gateway's address."""
    url = url.rstrip("/")
    return url[: -len("/v1")] if url.endswith("/v1") else url


def _amount(value: int, unit: str) -> str:
    if unit == "usd":  # an overrun's negative room as -$1.50, and -$0.001 as $0.00
        dollars = (Decimal(abs(value)) / 1_000_000_000).quantize(Decimal("0.01"), ROUND_DOWN)
        return f"{'-' if value < 0 and dollars else ''}${dollars}"
    return f"{value:,} tok"


def cap_time(cap_at: str, today: date) -> str:
    """When the forecast reaches the limit, in UTC: ``17:42Z`` today, ``12-17 17:42Z`` on
    another day (a weekly or monthly budget's cap may be days away)."""
    shown = f"{cap_at[11:16]}Z"
    return shown if cap_at[:10] == today.isoformat() else f"{cap_at[5:10]} {shown}"


def _left_bp(remaining: int, limit: int) -> int:
    """What is left as a share of the limit; a limit of 0 (a budget frozen at run time)
    has nothing left at all: the tightest there is."""
    return remaining * 10_000 // limit if limit > 0 else -(10**30)


def summarize(data: dict[str, Any], today: date | None = None) -> str:
    """The tightest budget of a /v1/spendgate/me answer (least left, as a share of its
    limit): what is left of what, its name, how much is used, its state unless ``ok``, and
    when its forecast reaches the limit if that is before the reset (with its date unless
    that is ``today``, the UTC date by default)."""
    budgets = [
        b
        for b in data.get("budgets") or []
        if b.get("kind") == "budget" and b.get("unit") in ("usd", "tokens")
    ]
    if not budgets:
        return "sg: no budget"
    tight = min(budgets, key=lambda b: (_left_bp(b["remaining"], b["limit"]), b["name"]))
    unit = tight["unit"]
    parts = [
        f"sg {_amount(tight['remaining'], unit)} left of {_amount(tight['limit'], unit)}",
        str(tight["name"]),
        f"{tight['used_bp'] // 100}% used",
    ]
    if tight.get("state") not in (None, "ok"):
        parts.append(str(tight["state"]))
    forecast = tight.get("forecast") or {}
    if forecast.get("exceeds") and forecast.get("cap_at") and tight["remaining"] > 0:
        today = today or datetime.now(UTC).date()
        parts.append(f"cap ~{cap_time(str(forecast['cap_at']), today)}")
    return " · ".join(parts)


def fetch(url: str, key: str, timeout: float) -> str:
    try:
        # inside the try: a base URL without a scheme (ANTHROPIC_BASE_URL=api.example.com)
        # or with a broken host is refused here, and the line must still be printed
        request = urllib.request.Request(  # noqa: S310
            f"{base_url(url)}{PATH}", headers={"authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return summarize(json.loads(response.read()))
    except urllib.error.HTTPError as failed:
        return "sg: key not accepted" if failed.code in (401, 403) else f"sg: HTTP {failed.code}"
    except (urllib.error.URLError, OSError, ValueError, KeyError, TypeError, AttributeError):
        return UNREACHABLE


@click.command()
@click.option(
    "--key",
    envvar=KEY_ENV,
    default=None,
    help="Your spendgate key; or SPENDGATE_KEY, ANTHROPIC_AUTH_TOKEN, ANTHROPIC_API_KEY, "
    "OPENAI_API_KEY (the first set).",
)
@click.option(
    "--url",
    envvar=URL_ENV,
    default="http://127.0.0.1:8700",
    show_default=True,
    help="The gateway; or SPENDGATE_URL, ANTHROPIC_BASE_URL, OPENAI_BASE_URL (a trailing "
    "/v1 is dropped).",
)
@click.option("--timeout", type=click.FloatRange(0.1, 30), default=2.0, show_default=True)
def statusline(key: str | None, url: str, timeout: float) -> None:
    """One line with your remaining budget, for Claude Code's statusLine or a prompt."""
    if not sys.stdin.isatty():
        sys.stdin.read()  # Claude Code's session JSON: not needed, but read to the end
    click.echo(fetch(url, key, timeout) if key else "sg: no key")
