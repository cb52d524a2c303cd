"""The budgets view's marked rows on PostgreSQL (`spendgate.domain.marks`, migration
0006): the recent marked rows by their partial indexes, and the newest refusal for an
exhausted budget per name and caller from ``refusals_latest``, which the statement that
inserts ledger rows keeps; the overruns counted per name, scope and member in SQL (not
from a rollup: linear in the window's overrun rows, but none loaded). Names are fixed
here, never input (hence the S608 waivers)."""

from __future__ import annotations

from spendgate.errors import BUDGET_EXHAUSTED
from spendgate.storage.sqlite.rows import LEDGER

_CALLER = 'blocked_by, key_id, "user", service, team, org, session_id, routed_model, tags'
_KEY = 'name, key_id, "user", service, team, org, session_id, routed_model, tags'
assert "'" not in BUDGET_EXHAUSTED

# Added to the statement that inserts rows: each caller's newest exhausted refusal.
LATEST_INSERTED = (
    "latest AS (INSERT INTO refusals_latest "  # noqa: S608
    f"SELECT DISTINCT ON ({_CALLER}) {_CALLER}, ts, id FROM inserted "
    f"WHERE blocked_by IS NOT NULL AND starts_with(error, '{BUDGET_EXHAUSTED}') "
    f"ORDER BY {_CALLER}, ts DESC, id DESC "
    f"ON CONFLICT ({_KEY}) DO UPDATE SET ts = excluded.ts, id = excluded.id "
    "WHERE (excluded.ts, excluded.id) > (refusals_latest.ts, refusals_latest.id))"
)

# $1 since, $2 recent, $3 until; each row once, oldest first, its id last. A caller whose
# newest exhausted refusal is from $3 on (a row newer than the view's now: written since,
# or by a gateway whose clock is ahead) has its newest one before $3 looked up in the
# ledger, newest first by (ts, id) as `refusals_latest` orders them.
_ROWS = f"SELECT {LEDGER.columns}, id FROM ledger WHERE ts >= $1 AND ts < $3 AND "  # noqa: S608
_NULLABLE = ('"user"', "service", "team", "org", "session_id", "routed_model")
_SAME_CALLER = " AND ".join(
    ["l.blocked_by = r.name", "l.key_id = r.key_id", "l.tags = r.tags"]
    + [f"l.{column} IS NOT DISTINCT FROM r.{column}" for column in _NULLABLE]
)
_NEWEST_BEFORE = (
    "SELECT o.ts, o.id FROM refusals_latest AS r CROSS JOIN LATERAL (SELECT l.ts, l.id "  # noqa: S608
    f"FROM ledger AS l WHERE l.ts >= $1 AND l.ts < $3 AND {_SAME_CALLER} "
    f"AND starts_with(l.error, '{BUDGET_EXHAUSTED}') ORDER BY l.ts DESC, l.id DESC LIMIT 1) "
    "AS o WHERE r.ts >= $3"
)
VIEW_MARKS = (
    f"{_ROWS}ts >= $2 AND blocked_by IS NOT NULL "  # noqa: S608
    f"UNION ALL {_ROWS}ts >= $2 AND blocked_by IS NULL AND settled_above != '[]' "
    f"UNION ALL {_ROWS}ts < $2 AND (ts, id) IN "
    f"(SELECT ts, id FROM refusals_latest WHERE ts >= $1 AND ts < $3 UNION ALL {_NEWEST_BEFORE}) "
    "ORDER BY ts, id"
)

# The overruns of [$1, $2) per name, scope and member (`spendgate.domain.marks.overruns`),
# counted here by 0005's index on overrun rows, not loaded: each row once per name it was
# settled above and member it has (a NULL member left out); rows of one caller and names
# counted together first, so the JSON is expanded once per distinct caller, not per row.
_MEMBERS = ", ".join(
    f"('{scope}', l.{column})"
    for scope, column in (
        ("org", "org"),
        ("team", "team"),
        ("service", "service"),
        ("user", '"user"'),
        ("key", "key_id"),
        ("session", "session_id"),
        ("model", "routed_model"),
    )
)
_GROUPED = (
    '(SELECT settled_above, org, team, service, "user", key_id, session_id, routed_model, '
    "tags, COUNT(*) AS n FROM ledger WHERE ts >= $1 AND ts < $2 AND settled_above != '[]' "
    "GROUP BY 1, 2, 3, 4, 5, 6, 7, 8, 9)"
)
OVERRUNS = (
    f"SELECT o.name, m.scope, m.member, SUM(l.n)::bigint FROM {_GROUPED} AS l "  # noqa: S608
    "CROSS JOIN LATERAL (SELECT DISTINCT name "
    "FROM jsonb_array_elements_text(l.settled_above::jsonb) AS n(name)) AS o "
    f"CROSS JOIN LATERAL (SELECT scope, member FROM (VALUES {_MEMBERS}) AS v(scope, member) "
    "UNION SELECT 'tag', t FROM jsonb_array_elements_text(l.tags::jsonb) AS t) AS m "
    "WHERE m.member IS NOT NULL GROUP BY 1, 2, 3"
)
