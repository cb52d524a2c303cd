#!/bin/sh
# spendgate status line: your remaining budget in one line, from GET /v1/spendgate/me.
#
# Claude Code: in ~/.claude/settings.json
#   "statusLine": {"type": "command", "command": "/path/to/statusline.sh"}
# A shell prompt (bash):  PS1='$(/path/to/statusline.sh) \w \$ '
#                 (zsh):  setopt PROMPT_SUBST; PROMPT='$(/path/to/statusline.sh) %~ %# '
#
# Needs only sh, curl and python3. The key is the first of SPENDGATE_KEY,
# ANTHROPIC_AUTH_TOKEN, ANTHROPIC_API_KEY, OPENAI_API_KEY; the gateway the first of
# SPENDGATE_URL, ANTHROPIC_BASE_URL, OPENAI_BASE_URL (a trailing /v1 is dropped).
# It always prints one line and exits 0, within SPENDGATE_STATUS_TIMEOUT seconds (2).
# The key goes to curl on stdin, never on its command line (where `ps` would show it).

[ -t 0 ] || cat >/dev/null  # Claude Code's session JSON on stdin: not needed

key=${SPENDGATE_KEY:-${ANTHROPIC_AUTH_TOKEN:-${ANTHROPIC_API_KEY:-$OPENAI_API_KEY}}}
url=${SPENDGATE_URL:-${ANTHROPIC_BASE_URL:-${OPENAI_BASE_URL:-http://127.0.0.1:8700}}}
url=${url%/}
url=${url%/v1}
if [ -z "$key" ]; then
    echo "sg: no key"
    exit 0
fi

answer=$(printf 'authorization: Bearer %s\n' "$key" |
    curl -s --max-time "${SPENDGATE_STATUS_TIMEOUT:-2}" -H @- -w '\n%{http_code}' \
        "$url/v1/spendgate/me?limit=1" 2>/dev/null)
if [ $? -ne 0 ] || [ -z "$answer" ]; then
    echo "sg: gateway unreachable"
    exit 0
fi

printf '%s' "$answer" | python3 -c '
import json, sys
from decimal import ROUND_DOWN, Decimal
from datetime import datetime, timezone

text = sys.stdin.read()
body, _, code = text.rpartition("\n")

def amount(value, unit):
    if unit == "usd":  # an overrun negative room as -$1.50, and -$0.001 as $0.00
        dollars = (Decimal(abs(value)) / 1_000_000_000).quantize(Decimal("0.01"), ROUND_DOWN)
        return ("-" if value < 0 and dollars else "") + "$" + str(dollars)
    return format(value, ",") + " tok"

def summarize(data):
    budgets = [
        b for b in data.get("budgets") or []
        if b.get("kind") == "budget" and b.get("unit") in ("usd", "tokens")
    ]
    if not budgets:
        return "sg: no budget"
    # a limit of 0 (frozen at run time) has nothing left at all: the tightest there is
    left = lambda b: b["remaining"] * 10_000 // b["limit"] if b["limit"] > 0 else -(10**30)
    tight = min(budgets, key=lambda b: (left(b), b["name"]))
    unit, left, limit = tight["unit"], tight["remaining"], tight["limit"]
    parts = [
        "sg " + amount(left, unit) + " left of " + amount(limit, unit),
        str(tight["name"]),
        str(tight["used_bp"] // 100) + "% used",
    ]
    if tight.get("state") not in (None, "ok"):
        parts.append(str(tight["state"]))
    forecast = tight.get("forecast") or {}
    if forecast.get("exceeds") and forecast.get("cap_at") and left > 0:
        cap = str(forecast["cap_at"])
        shown = cap[11:16] + "Z"
        if cap[:10] != datetime.now(timezone.utc).date().isoformat():
            shown = cap[5:10] + " " + shown  # another day: a weekly or monthly cap
        parts.append("cap ~" + shown)
    return " \u00b7 ".join(parts)

if code in ("401", "403"):
    print("sg: key not accepted")
elif code != "200":
    print("sg: HTTP " + code if code.isdigit() and code != "000" else "sg: gateway unreachable")
else:
    try:
        print(summarize(json.loads(body)))
    except (ValueError, KeyError, TypeError):
        print("sg: gateway unreachable")
' 2>/dev/null || echo "sg: gateway unreachable"
