-- Per-hour rollups of the ledger, kept by triggers in the transaction that inserts each
-- row (every path: `record`, `append`, joint settlement, the lapse sweep, another
-- process), and backfilled here from the rows already there. Reports over whole hours read
-- these; the partial hours at a period's edges are summed from the raw rows
-- (docs/storage.md, "Rollups"). Ledger rows are never updated or deleted, so an insert
-- trigger is all it takes.
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

-- The first of a request's served rows counts it as a request (and the first with each
-- routing kind, a fallback's success, a shadow rule), judged against the rows of the same
-- request inserted before it (lower id; `request_of` in spendgate.domain.savings: attempt
-- n's id is `<request id>-<n>`): a bit mask, `seen`, computed once per row. The trigger
-- and the backfill below write the same contributions (the storage tests hold both to
-- the raw ledger).
CREATE TRIGGER ledger_rollup_usage AFTER INSERT ON ledger
BEGIN
    INSERT INTO usage_hourly
    SELECT d.dim, NEW.ts - (((NEW.ts % 3600000) + 3600000) % 3600000), IFNULL(CASE d.dim WHEN 'team' THEN NEW.team WHEN 'service' THEN NEW.service
        WHEN 'user' THEN NEW."user" WHEN 'key' THEN NEW.key_id WHEN 'model' THEN NEW.served_model
        WHEN 'org' THEN NEW.org ELSE NEW.provider END, 0),
        NEW.blocked_by IS NULL,
        NEW.input_tokens,
        NEW.cached_input_tokens,
        NEW.cache_write_tokens,
        NEW.output_tokens,
        NEW.reasoning_tokens,
        NEW.cost_nanos,
        NEW.blocked_by IS NULL AND NEW.status >= 400,
        NEW.usage_estimated,
        NEW.blocked_by IS NOT NULL,
        NEW.would_cost_nanos,
        NEW.blocked_by IS NULL AND NEW.retry_count > 0,
        CASE WHEN NEW.retry_count > 0 THEN NEW.cost_nanos ELSE 0 END,
        NEW.blocked_by IS NULL AND NOT (f.seen & 1),
        CASE WHEN NEW.blocked_by IS NULL THEN NEW.cost_nanos ELSE 0 END,
        CASE WHEN NEW.blocked_by IS NOT NULL THEN 0
             WHEN NEW.baseline_cost_nanos IS NULL OR NEW.unreconciled THEN NEW.cost_nanos
             ELSE NEW.baseline_cost_nanos END,
        NEW.blocked_by IS NULL AND NEW.route_kind IS 'alias' AND NOT (f.seen & 2),
        NEW.blocked_by IS NULL AND NEW.route_kind IS 'rewrite' AND NOT (f.seen & 4),
        NEW.blocked_by IS NULL AND NEW.route_kind IS 'downgrade' AND NOT (f.seen & 8),
        NEW.blocked_by IS NULL AND NEW.attempt > 0 AND NEW.status < 400 AND NOT (f.seen & 16),
        CASE WHEN NEW.blocked_by IS NOT NULL THEN 0
             WHEN NEW.shadow_cost_nanos IS NULL OR NEW.unreconciled THEN NEW.cost_nanos
             ELSE NEW.shadow_cost_nanos END
    FROM (SELECT CASE WHEN NEW.blocked_by IS NOT NULL THEN 0 ELSE mask.seen END AS seen
        FROM (SELECT (COUNT(o.id) > 0)
        + 2 * IFNULL(MAX(o.route_kind = 'alias'), 0)
        + 4 * IFNULL(MAX(o.route_kind = 'rewrite'), 0)
        + 8 * IFNULL(MAX(o.route_kind = 'downgrade'), 0)
        + 16 * IFNULL(MAX(o.attempt > 0 AND o.status < 400), 0)
        + 32 * IFNULL(MAX(o.shadow_rule = NEW.shadow_rule), 0) AS seen
    FROM ledger AS o
    WHERE NEW.blocked_by IS NULL AND o.id < NEW.id AND o.blocked_by IS NULL AND (
        (o.request_id = (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END)
         AND (o.attempt = 0 OR substr(o.request_id, -length(o.attempt) - 1) != '-' || o.attempt))
        OR (o.request_id > (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END) || '-' AND o.request_id < (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END) || '.'
            AND o.attempt > 0 AND o.request_id = (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END) || '-' || o.attempt))) AS mask) AS f,
        (SELECT 'team' AS dim UNION ALL SELECT 'service' UNION ALL SELECT 'user'
        UNION ALL SELECT 'key' UNION ALL SELECT 'model' UNION ALL SELECT 'org'
        UNION ALL SELECT 'provider') AS d
    WHERE true
    ON CONFLICT (dim, hour, grp) DO UPDATE SET
        requests = requests + excluded.requests,
        input_tokens = input_tokens + excluded.input_tokens,
        cached_input_tokens = cached_input_tokens + excluded.cached_input_tokens,
        cache_write_tokens = cache_write_tokens + excluded.cache_write_tokens,
        output_tokens = output_tokens + excluded.output_tokens,
        reasoning_tokens = reasoning_tokens + excluded.reasoning_tokens,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        errors = errors + excluded.errors,
        estimated = estimated + excluded.estimated,
        blocked = blocked + excluded.blocked,
        blocked_would_cost_nanos = blocked_would_cost_nanos + excluded.blocked_would_cost_nanos,
        retries = retries + excluded.retries,
        retry_cost_nanos = retry_cost_nanos + excluded.retry_cost_nanos,
        s_requests = s_requests + excluded.s_requests,
        s_cost_nanos = s_cost_nanos + excluded.s_cost_nanos,
        s_counterfactual_nanos = s_counterfactual_nanos + excluded.s_counterfactual_nanos,
        s_aliased = s_aliased + excluded.s_aliased,
        s_rewritten = s_rewritten + excluded.s_rewritten,
        s_downgraded = s_downgraded + excluded.s_downgraded,
        s_fell_back = s_fell_back + excluded.s_fell_back,
        s_shadow_cost_nanos = s_shadow_cost_nanos + excluded.s_shadow_cost_nanos;
END;

CREATE TRIGGER ledger_rollup_blocks AFTER INSERT ON ledger
WHEN NEW.blocked_by IS NOT NULL OR NEW.shadow_blocks != '[]' OR NEW.settled_above != '[]'
BEGIN
    INSERT INTO blocks_hourly
    SELECT NEW.ts - (((NEW.ts % 3600000) + 3600000) % 3600000), NEW.blocked_by, 1, NEW.would_cost_nanos, 0, 0, NEW.status = 429, 0, 0
    WHERE NEW.blocked_by IS NOT NULL
    UNION ALL
    SELECT NEW.ts - (((NEW.ts % 3600000) + 3600000) % 3600000), value, 0, 0, 1, NEW.cost_nanos, 0, 0, 0 FROM json_each(NEW.shadow_blocks)
    WHERE true
    UNION ALL
    SELECT NEW.ts - (((NEW.ts % 3600000) + 3600000) % 3600000), value, 0, 0, 0, 0, 0, 1, NEW.cost_nanos FROM json_each(NEW.settled_above)
    WHERE true
    ON CONFLICT (hour, name) DO UPDATE SET
        blocked = blocked + excluded.blocked,
        blocked_would_cost_nanos = blocked_would_cost_nanos + excluded.blocked_would_cost_nanos,
        shadow_hits = shadow_hits + excluded.shadow_hits,
        shadow_cost_nanos = shadow_cost_nanos + excluded.shadow_cost_nanos,
        retryable = retryable + excluded.retryable,
        overruns = overruns + excluded.overruns,
        overrun_cost_nanos = overrun_cost_nanos + excluded.overrun_cost_nanos;
END;

CREATE TRIGGER ledger_rollup_shadow AFTER INSERT ON ledger
WHEN NEW.blocked_by IS NULL AND NEW.shadow_rule IS NOT NULL
BEGIN
    INSERT INTO shadow_hourly
    SELECT NEW.ts - (((NEW.ts % 3600000) + 3600000) % 3600000), NEW.shadow_rule, NOT (mask.seen & 32), NEW.cost_nanos,
        CASE WHEN NEW.shadow_cost_nanos IS NULL OR NEW.unreconciled THEN NEW.cost_nanos
             ELSE NEW.shadow_cost_nanos END
    FROM (SELECT (COUNT(o.id) > 0)
        + 2 * IFNULL(MAX(o.route_kind = 'alias'), 0)
        + 4 * IFNULL(MAX(o.route_kind = 'rewrite'), 0)
        + 8 * IFNULL(MAX(o.route_kind = 'downgrade'), 0)
        + 16 * IFNULL(MAX(o.attempt > 0 AND o.status < 400), 0)
        + 32 * IFNULL(MAX(o.shadow_rule = NEW.shadow_rule), 0) AS seen
    FROM ledger AS o
    WHERE o.id < NEW.id AND o.blocked_by IS NULL AND (
        (o.request_id = (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END)
         AND (o.attempt = 0 OR substr(o.request_id, -length(o.attempt) - 1) != '-' || o.attempt))
        OR (o.request_id > (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END) || '-' AND o.request_id < (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END) || '.'
            AND o.attempt > 0 AND o.request_id = (CASE WHEN NEW.attempt > 0
            AND substr(NEW.request_id, -length(NEW.attempt) - 1) = '-' || NEW.attempt
        THEN substr(NEW.request_id, 1, length(NEW.request_id) - length(NEW.attempt) - 1)
        ELSE NEW.request_id END) || '-' || o.attempt))) AS mask
    WHERE true
    ON CONFLICT (hour, rule) DO UPDATE SET
        requests = requests + excluded.requests,
        cost_nanos = cost_nanos + excluded.cost_nanos,
        shadow_cost_nanos = shadow_cost_nanos + excluded.shadow_cost_nanos;
END;

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

-- Refused rows and overruns over a period (`spendgate blocks`, the budgets view) without
-- reading the rows in between.
CREATE INDEX ledger_marked ON ledger (ts)
    WHERE blocked_by IS NOT NULL OR settled_above != '[]';
