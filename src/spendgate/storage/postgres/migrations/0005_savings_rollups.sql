-- Savings from rollups (`spendgate savings`, GET /admin/savings): per hour and per team
-- and service, the sums `Ledger.savings` needs over the rows not refused, each row counted
-- as if it were a request of its own; per hour and shadow rule, the same for shadow rules.
-- Maintained in the statement that inserts ledger rows, as ledger_hourly is. A report
-- reads these for the whole hours of its period, the ledger for its edges, and takes back
-- what a request of several rows (fallback attempts) counted more than once, from those
-- rows alone (`spendgate.storage.postgres.rollup_sql`).

CREATE TABLE savings_hourly (
    hour_ms              BIGINT NOT NULL,
    team                 TEXT,
    service              TEXT,
    answered             BIGINT NOT NULL,  -- rows not refused
    cost_nanos           BIGINT NOT NULL,
    counterfactual_nanos BIGINT NOT NULL,
    aliased              BIGINT NOT NULL,  -- rows of each routing kind
    rewritten            BIGINT NOT NULL,
    downgraded           BIGINT NOT NULL,
    fell_back            BIGINT NOT NULL,  -- answered fallback attempts
    shadow_cost_nanos    BIGINT NOT NULL,
    UNIQUE NULLS NOT DISTINCT (hour_ms, team, service)
);

CREATE TABLE shadow_hourly (
    hour_ms           BIGINT NOT NULL,
    rule              TEXT NOT NULL,
    answered          BIGINT NOT NULL,
    cost_nanos        BIGINT NOT NULL,
    shadow_cost_nanos BIGINT NOT NULL,
    PRIMARY KEY (hour_ms, rule)
);

INSERT INTO savings_hourly
SELECT ts - ts % 3600000, team, service, COUNT(*), SUM(cost_nanos),
    SUM(CASE WHEN baseline_cost_nanos IS NULL OR unreconciled THEN cost_nanos
             ELSE baseline_cost_nanos END),
    COUNT(*) FILTER (WHERE route_kind = 'alias'), COUNT(*) FILTER (WHERE route_kind = 'rewrite'),
    COUNT(*) FILTER (WHERE route_kind = 'downgrade'),
    COUNT(*) FILTER (WHERE attempt > 0 AND status < 400),
    SUM(CASE WHEN shadow_cost_nanos IS NULL OR unreconciled THEN cost_nanos
             ELSE shadow_cost_nanos END)
FROM ledger WHERE blocked_by IS NULL
GROUP BY 1, 2, 3;

INSERT INTO shadow_hourly
SELECT ts - ts % 3600000, shadow_rule, COUNT(*), SUM(cost_nanos),
    SUM(CASE WHEN shadow_cost_nanos IS NULL OR unreconciled THEN cost_nanos
             ELSE shadow_cost_nanos END)
FROM ledger WHERE blocked_by IS NULL AND shadow_rule IS NOT NULL
GROUP BY 1, 2;

-- The answered fallback attempts of a period: the requests that may hold several rows
-- (their first rows are found by request id, as an array: an index probe each).
CREATE INDEX ledger_attempts ON ledger (ts) WHERE attempt > 0 AND blocked_by IS NULL;
-- `spendgate blocks`' shadow hits and overruns: the rows that have some, not the period.
CREATE INDEX ledger_shadow_hits ON ledger (ts) WHERE shadow_blocks != '[]';
CREATE INDEX ledger_overruns ON ledger (ts) WHERE settled_above != '[]';
-- The newest answered requests per (key, model) and per model (`Ledger.recent_outputs`,
-- the refusal estimate's samples): a walk down an index per pair, not a scan of 30 days.
CREATE INDEX ledger_answered ON ledger
    (key_id, (COALESCE(routed_model, requested_model)), ts, request_id)
    INCLUDE (output_tokens) WHERE blocked_by IS NULL AND status < 400;
CREATE INDEX ledger_answered_model ON ledger
    ((COALESCE(routed_model, requested_model)), ts, request_id)
    INCLUDE (output_tokens) WHERE blocked_by IS NULL AND status < 400;
