-- Per-hour rollups of the ledger, kept by an incremental job past a high-water mark
-- (ledger ids: rows are never updated or deleted), and backfilled here from the rows
-- already there. Reports over whole hours read these; the partial hours at a period's
-- edges, and the rows past the mark, are summed from the raw rows (docs/storage.md,
-- "Rollups").
--
-- `hour` is the epoch millisecond the row's hour starts at (UTC). A group that is NULL in
-- the ledger is stored as the integer 0 (the group columns hold text otherwise, and a
-- primary key column cannot be NULL): `CASE WHEN typeof(grp) = 'integer' THEN NULL ...`.

-- Usage and savings per hour, per grouping (`dim`: team, service, user, key, model, org,
-- provider) and group. The s_* columns count the served rows only (not refused), for
-- savings: a request's rows (its attempts) count as one request, on the first of them
-- inserted (`first_*` below); every row of a request carries the request's arrival time,
-- so they fall in the same hour.
CREATE TABLE usage_hourly (
    dim                      TEXT NOT NULL,
    hour                     INTEGER NOT NULL,
    grp                      NOT NULL,
    requests                 INTEGER NOT NULL,
    input_tokens             INTEGER NOT NULL,
    cached_input_tokens      INTEGER NOT NULL,
    cache_write_tokens       INTEGER NOT NULL,
    output_tokens            INTEGER NOT NULL,
    reasoning_tokens         INTEGER NOT NULL,
    cost_nanos               INTEGER NOT NULL,
    errors                   INTEGER NOT NULL,
    estimated                INTEGER NOT NULL,
    blocked                  INTEGER NOT NULL,
    blocked_would_cost_nanos INTEGER NOT NULL,
    retries                  INTEGER NOT NULL,
    retry_cost_nanos         INTEGER NOT NULL,
    s_requests               INTEGER NOT NULL,
    s_cost_nanos             INTEGER NOT NULL,
    s_counterfactual_nanos   INTEGER NOT NULL,
    s_aliased                INTEGER NOT NULL,
    s_rewritten              INTEGER NOT NULL,
    s_downgraded             INTEGER NOT NULL,
    s_fell_back              INTEGER NOT NULL,
    s_shadow_cost_nanos      INTEGER NOT NULL,
    PRIMARY KEY (dim, hour, grp)
) WITHOUT ROWID;

-- What each budget, limit or breaker refused, what each shadow limit would have, and the
-- overruns, per hour (`spendgate blocks`).
CREATE TABLE blocks_hourly (
    hour                     INTEGER NOT NULL,
    name                     TEXT NOT NULL,
    blocked                  INTEGER NOT NULL,
    blocked_would_cost_nanos INTEGER NOT NULL,
    shadow_hits              INTEGER NOT NULL,
    shadow_cost_nanos        INTEGER NOT NULL,
    retryable                INTEGER NOT NULL,
    overruns                 INTEGER NOT NULL,
    overrun_cost_nanos       INTEGER NOT NULL,
    PRIMARY KEY (hour, name)
) WITHOUT ROWID;

-- Per shadow routing rule, per hour: the requests it would have rerouted and their costs.
CREATE TABLE shadow_hourly (
    hour              INTEGER NOT NULL,
    rule              TEXT NOT NULL,
    requests          INTEGER NOT NULL,
    cost_nanos        INTEGER NOT NULL,
    shadow_cost_nanos INTEGER NOT NULL,
    PRIMARY KEY (hour, rule)
) WITHOUT ROWID;

-- An incremental job (`spendgate.storage.sqlite.rollups.roll_up`) adds the rows past
-- `rollup_mark.rolled_to` (ledger ids) to the rollups, in batches on the writer; reports
-- read the rollups for the rows up to the mark and the rows past it raw, in one read
-- transaction. The first of a request's served rows counts it as a request (and the first
-- with each routing kind, a fallback's success, a shadow rule), judged against the rows of
-- the same request with a lower id (`request_of` in spendgate.domain.savings: attempt n's
-- id is `<request id>-<n>`): a bit mask, `seen`, computed once per row.
CREATE TABLE rollup_mark (
    one       INTEGER PRIMARY KEY CHECK (one = 1),
    rolled_to INTEGER NOT NULL
);

-- The backfill: the rows already in the ledger, summed once (each served row's mask
-- computed once, into a table dropped at the end).
CREATE TABLE rollup_backfill_seen (id INTEGER PRIMARY KEY, seen INTEGER NOT NULL);
INSERT INTO rollup_backfill_seen
SELECT l.id, (SELECT (COUNT(o.id) > 0)
        + 2 * IFNULL(MAX(o.route_kind = 'alias'), 0)
        + 4 * IFNULL(MAX(o.route_kind = 'rewrite'), 0)
        + 8 * IFNULL(MAX(o.route_kind = 'downgrade'), 0)
        + 16 * IFNULL(MAX(o.attempt > 0 AND o.status < 400), 0)
        + 32 * IFNULL(MAX(o.shadow_rule = l.shadow_rule), 0) AS seen
    FROM ledger AS o
    WHERE o.id < l.id AND o.blocked_by IS NULL AND (
        (o.request_id = (CASE WHEN l.attempt > 0
            AND substr(l.request_id, -length(l.attempt) - 1) = '-' || l.attempt
        THEN substr(l.request_id, 1, length(l.request_id) - length(l.attempt) - 1)
        ELSE l.request_id END)
         AND (o.attempt = 0 OR substr(o.request_id, -length(o.attempt) - 1) != '-' || o.attempt))
        OR (o.request_id > (CASE WHEN l.attempt > 0
            AND substr(l.request_id, -length(l.attempt) - 1) = '-' || l.attempt
        THEN substr(l.request_id, 1, length(l.request_id) - length(l.attempt) - 1)
        ELSE l.request_id END) || '-' AND o.request_id < (CASE WHEN l.attempt > 0
            AND substr(l.request_id, -length(l.attempt) - 1) = '-' || l.attempt
        THEN substr(l.request_id, 1, length(l.request_id) - length(l.attempt) - 1)
        ELSE l.request_id END) || '.'
            AND o.attempt > 0 AND o.request_id = (CASE WHEN l.attempt > 0
            AND substr(l.request_id, -length(l.attempt) - 1) = '-' || l.attempt
        THEN substr(l.request_id, 1, length(l.request_id) - length(l.attempt) - 1)
        ELSE l.request_id END) || '-' || o.attempt))) FROM ledger AS l WHERE l.blocked_by IS NULL;

INSERT INTO usage_hourly
SELECT d.dim, l.hour, IFNULL(CASE d.dim WHEN 'team' THEN l.team WHEN 'service' THEN l.service
        WHEN 'user' THEN l."user" WHEN 'key' THEN l.key_id WHEN 'model' THEN l.served_model
        WHEN 'org' THEN l.org ELSE l.provider END, 0),
        SUM(c0),
        SUM(c1),
        SUM(c2),
        SUM(c3),
        SUM(c4),
        SUM(c5),
        SUM(c6),
        SUM(c7),
        SUM(c8),
        SUM(c9),
        SUM(c10),
        SUM(c11),
        SUM(c12),
        SUM(c13),
        SUM(c14),
        SUM(c15),
        SUM(c16),
        SUM(c17),
        SUM(c18),
        SUM(c19),
        SUM(c20)
FROM (SELECT l.*, l.ts - (((l.ts % 3600000) + 3600000) % 3600000) AS hour,
        l.blocked_by IS NULL AS c0,
        l.input_tokens AS c1,
        l.cached_input_tokens AS c2,
        l.cache_write_tokens AS c3,
        l.output_tokens AS c4,
        l.reasoning_tokens AS c5,
        l.cost_nanos AS c6,
        l.blocked_by IS NULL AND l.status >= 400 AS c7,
        l.usage_estimated AS c8,
        l.blocked_by IS NOT NULL AS c9,
        l.would_cost_nanos AS c10,
        l.blocked_by IS NULL AND l.retry_count > 0 AS c11,
        CASE WHEN l.retry_count > 0 THEN l.cost_nanos ELSE 0 END AS c12,
        l.blocked_by IS NULL AND NOT (f.seen & 1) AS c13,
        CASE WHEN l.blocked_by IS NULL THEN l.cost_nanos ELSE 0 END AS c14,
        CASE WHEN l.blocked_by IS NOT NULL THEN 0
             WHEN l.baseline_cost_nanos IS NULL OR l.unreconciled THEN l.cost_nanos
             ELSE l.baseline_cost_nanos END AS c15,
        l.blocked_by IS NULL AND l.route_kind IS 'alias' AND NOT (f.seen & 2) AS c16,
        l.blocked_by IS NULL AND l.route_kind IS 'rewrite' AND NOT (f.seen & 4) AS c17,
        l.blocked_by IS NULL AND l.route_kind IS 'downgrade' AND NOT (f.seen & 8) AS c18,
        l.blocked_by IS NULL AND l.attempt > 0 AND l.status < 400 AND NOT (f.seen & 16) AS c19,
        CASE WHEN l.blocked_by IS NOT NULL THEN 0
             WHEN l.shadow_cost_nanos IS NULL OR l.unreconciled THEN l.cost_nanos
             ELSE l.shadow_cost_nanos END AS c20
    FROM ledger AS l LEFT JOIN rollup_backfill_seen AS f ON f.id = l.id) AS l,
    (SELECT 'team' AS dim UNION ALL SELECT 'service' UNION ALL SELECT 'user'
        UNION ALL SELECT 'key' UNION ALL SELECT 'model' UNION ALL SELECT 'org'
        UNION ALL SELECT 'provider') AS d
GROUP BY 1, 2, 3;

INSERT INTO blocks_hourly
SELECT hour, name, SUM(blocked), SUM(would_cost), SUM(shadow_hits), SUM(shadow_cost),
    SUM(retryable), SUM(overruns), SUM(overrun_cost)
FROM (
    SELECT l.ts - (((l.ts % 3600000) + 3600000) % 3600000) AS hour, l.blocked_by AS name, 1 AS blocked,
        l.would_cost_nanos AS would_cost, 0 AS shadow_hits, 0 AS shadow_cost,
        l.status = 429 AS retryable, 0 AS overruns, 0 AS overrun_cost
    FROM ledger AS l WHERE l.blocked_by IS NOT NULL
    UNION ALL
    SELECT l.ts - (((l.ts % 3600000) + 3600000) % 3600000), hit.value, 0, 0, 1, l.cost_nanos, 0, 0, 0
    FROM ledger AS l, json_each(l.shadow_blocks) AS hit WHERE l.shadow_blocks != '[]'
    UNION ALL
    SELECT l.ts - (((l.ts % 3600000) + 3600000) % 3600000), over.value, 0, 0, 0, 0, 0, 1, l.cost_nanos
    FROM ledger AS l, json_each(l.settled_above) AS over WHERE l.settled_above != '[]'
)
GROUP BY hour, name;

INSERT INTO shadow_hourly
SELECT l.ts - (((l.ts % 3600000) + 3600000) % 3600000), l.shadow_rule, SUM(NOT (f.seen & 32)), SUM(l.cost_nanos),
    SUM(CASE WHEN l.shadow_cost_nanos IS NULL OR l.unreconciled THEN l.cost_nanos
             ELSE l.shadow_cost_nanos END)
FROM ledger AS l JOIN rollup_backfill_seen AS f ON f.id = l.id
WHERE l.shadow_rule IS NOT NULL
GROUP BY 1, 2;

DROP TABLE rollup_backfill_seen;
INSERT INTO rollup_mark VALUES (1, IFNULL((SELECT MAX(id) FROM ledger), 0));

-- Refused rows and overruns over a period (`spendgate blocks`, the budgets view) without
-- reading the rows in between.
CREATE INDEX ledger_marked ON ledger (ts)
    WHERE blocked_by IS NOT NULL OR settled_above != '[]';
