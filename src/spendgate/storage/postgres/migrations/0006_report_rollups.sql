-- `spendgate blocks` and `spendgate savings` without reading the period's rows
-- (`spendgate.storage.postgres.report_rollups`, `refusal_sql`; docs/storage.md#postgresql).

-- What each budget, limit or breaker refused, and what shadow limits and overruns marked,
-- per hour: additive, kept by the statement that inserts ledger rows, as ledger_hourly.
CREATE TABLE blocks_hourly (
    hour_ms                  BIGINT NOT NULL,
    name                     TEXT NOT NULL,
    blocked                  BIGINT NOT NULL,
    blocked_would_cost_nanos BIGINT NOT NULL,
    shadow_hits              BIGINT NOT NULL,
    shadow_cost_nanos        BIGINT NOT NULL,
    retryable                BIGINT NOT NULL,  -- refused with 429
    overruns                 BIGINT NOT NULL,
    overrun_cost_nanos       BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, name)
);

INSERT INTO blocks_hourly
SELECT hour_ms, name, SUM(blocked), SUM(would), SUM(hits), SUM(hit_cost), SUM(retryable),
    SUM(overruns), SUM(over_cost)
FROM (
    SELECT ts - ts % 3600000 AS hour_ms, blocked_by AS name, 1 AS blocked,
        would_cost_nanos AS would, 0 AS hits, 0 AS hit_cost, (status = 429)::int AS retryable,
        0 AS overruns, 0 AS over_cost
    FROM ledger WHERE blocked_by IS NOT NULL
    UNION ALL
    SELECT ts - ts % 3600000, hit, 0, 0, 1, cost_nanos, 0, 0, 0
    FROM ledger, jsonb_array_elements_text(shadow_blocks::jsonb) AS hit
    WHERE shadow_blocks != '[]'
    UNION ALL
    SELECT ts - ts % 3600000, over, 0, 0, 0, 0, 0, 1, cost_nanos
    FROM ledger, jsonb_array_elements_text(settled_above::jsonb) AS over
    WHERE settled_above != '[]'
) AS marks
GROUP BY 1, 2;

-- The distinct refused requests per hour and per what their estimate depends on
-- (`spendgate.domain.refusals.RefusalCombo`). Not additive (a row written late can make a
-- later one a repeat), so kept by the roll-up job: every refused row inserted leaves its
-- id and time in refusals_pending, in the insert statement; the job takes pending rows
-- and recomputes the hours they can change from the ledger. A report reads the hours with
-- pending rows raw.
CREATE TABLE refusals_hourly (
    hour_ms          BIGINT NOT NULL,
    name             TEXT NOT NULL,    -- blocked_by
    key_id           TEXT NOT NULL,
    model            TEXT NOT NULL,    -- COALESCE(routed_model, requested_model)
    ceiling          BIGINT NOT NULL,  -- would_ceiling
    rate             BIGINT NOT NULL,  -- would_output_rate
    requests         BIGINT NOT NULL,  -- distinct refused requests (repeats left out)
    worst_case_nanos BIGINT NOT NULL,
    fixed_nanos      BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, name, key_id, model, ceiling, rate)
);

CREATE TABLE refusals_pending (
    id BIGINT PRIMARY KEY,  -- the ledger row's id
    ts BIGINT NOT NULL
);

-- The backfill: every refused row, distinct as the whole ledger says (`refusal_sql`).
INSERT INTO refusals_hourly
SELECT ts - ts % 3600000, blocked_by, key_id, model, would_ceiling, would_output_rate,
    COUNT(*), SUM(would_cost_nanos), SUM(fixed)
FROM (
    SELECT blocked_by, key_id, COALESCE(routed_model, requested_model) AS model,
        would_ceiling, would_output_rate, would_cost_nanos,
        CASE WHEN would_output_rate = 0 AND would_input_nanos = 0 THEN would_cost_nanos
             ELSE would_input_nanos END AS fixed, retry_count, ts, fingerprint,
        row_number() OVER (PARTITION BY
            CASE WHEN attempt > 0 AND right(request_id, length(attempt::text) + 1) = '-' || attempt
                 THEN left(request_id, -(length(attempt::text) + 1)) ELSE request_id END
            ORDER BY ts, retry_count, attempt, request_id COLLATE "C") AS nth,
        lag(ts) OVER (PARTITION BY key_id, fingerprint
            ORDER BY ts, retry_count, attempt, request_id COLLATE "C") AS previous
    FROM ledger WHERE blocked_by IS NOT NULL
) AS r
WHERE retry_count = 0 AND nth = 1
    AND (fingerprint IS NULL OR previous IS NULL OR ts - previous > 5000)
GROUP BY 1, 2, 3, 4, 5, 6;

-- The rows of requests with fallback attempts, narrowed to what `spendgate savings` needs
-- to count such a request once: every row with attempt > 0, and the first row (attempt 0)
-- of its request, copied when the attempt is inserted (a first row inserted after its
-- attempts is found in the ledger by the report instead). Kept by the insert statement.
-- Replaces the probes of the ledger by request id that a report made per attempt.
CREATE TABLE fallback_rows (
    request_id  TEXT PRIMARY KEY,
    ts          BIGINT NOT NULL,
    request     TEXT NOT NULL,     -- the request it belongs to (`domain.savings.request_of`)
    attempt     INTEGER NOT NULL,
    answered    BOOLEAN NOT NULL,  -- blocked_by IS NULL
    status      INTEGER NOT NULL,
    team        TEXT,
    service     TEXT,
    route_kind  TEXT,
    shadow_rule TEXT
);
CREATE INDEX fallback_rows_ts ON fallback_rows (ts);

INSERT INTO fallback_rows
SELECT request_id, ts,
    CASE WHEN attempt > 0 AND right(request_id, length(attempt::text) + 1) = '-' || attempt
         THEN left(request_id, -(length(attempt::text) + 1)) ELSE request_id END,
    attempt, blocked_by IS NULL, status, team, service, route_kind, shadow_rule
FROM ledger WHERE attempt > 0;

INSERT INTO fallback_rows
SELECT l.request_id, l.ts, l.request_id, 0, l.blocked_by IS NULL, l.status, l.team, l.service,
    l.route_kind, l.shadow_rule
FROM (SELECT DISTINCT request FROM fallback_rows) AS a
    JOIN ledger_ids AS d ON d.request_id = a.request
    JOIN ledger AS l ON l.request_id = d.request_id AND l.ts = d.ts
WHERE l.attempt = 0
ON CONFLICT (request_id) DO NOTHING;

-- Its reader is fallback_rows now; one index fewer written on every insert.
DROP INDEX ledger_attempts;

-- The budgets view: per name and caller (what a view's members are made of), the newest
-- refusal for an exhausted budget (`spendgate.domain.marks`), kept by the insert
-- statement; the view reads those rows, not every refusal of the longest window.
CREATE TABLE refusals_latest (
    name         TEXT NOT NULL,
    key_id       TEXT NOT NULL,
    "user"       TEXT,
    service      TEXT,
    team         TEXT,
    org          TEXT,
    session_id   TEXT,
    routed_model TEXT,
    tags         TEXT NOT NULL,
    ts           BIGINT NOT NULL,
    id           BIGINT NOT NULL,  -- the ledger row's
    UNIQUE NULLS NOT DISTINCT
        (name, key_id, "user", service, team, org, session_id, routed_model, tags)
);
CREATE INDEX refusals_latest_ts ON refusals_latest (ts);

INSERT INTO refusals_latest
SELECT DISTINCT ON (blocked_by, key_id, "user", service, team, org, session_id, routed_model,
    tags) blocked_by, key_id, "user", service, team, org, session_id, routed_model, tags, ts, id
FROM ledger WHERE blocked_by IS NOT NULL AND starts_with(error, 'Budget exhausted for ')
ORDER BY blocked_by, key_id, "user", service, team, org, session_id, routed_model, tags,
    ts DESC, id DESC;

-- Statistics for the new tables now, not at autovacuum's next pass: the reports' plans
-- depend on them.
ANALYZE blocks_hourly;
ANALYZE refusals_hourly;
ANALYZE fallback_rows;
ANALYZE refusals_latest;
