-- Hourly usage rollups: one row per (hour, key, and the names a usage report groups by),
-- holding the sums of `Ledger.usage`. Maintained in the statement that inserts ledger rows
-- (`spendgate.storage.postgres.ledger`), so it always agrees with the ledger; a usage
-- report reads it for the whole hours of its period and the ledger for the edges.
-- Measured at 10 M ledger rows: docs/benchmarks.md.

CREATE TABLE ledger_hourly (
    hour_ms             BIGINT NOT NULL,
    key_id              TEXT NOT NULL,
    "user"              TEXT,
    service             TEXT,
    team                TEXT,
    org                 TEXT,
    served_model        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    answered            BIGINT NOT NULL,  -- rows not refused (UsageGroup.requests)
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    errors              BIGINT NOT NULL,
    estimated           BIGINT NOT NULL,
    blocked             BIGINT NOT NULL,
    would_cost_nanos    BIGINT NOT NULL,
    retries             BIGINT NOT NULL,
    retry_cost_nanos    BIGINT NOT NULL,
    UNIQUE NULLS NOT DISTINCT
        (hour_ms, key_id, "user", service, team, org, served_model, provider)
);

INSERT INTO ledger_hourly
SELECT ts - ts % 3600000, key_id, "user", service, team, org, served_model, provider,
    COUNT(*) FILTER (WHERE blocked_by IS NULL), SUM(input_tokens), SUM(cached_input_tokens),
    SUM(cache_write_tokens), SUM(output_tokens), SUM(reasoning_tokens), SUM(cost_nanos),
    COUNT(*) FILTER (WHERE status >= 400 AND blocked_by IS NULL),
    COUNT(*) FILTER (WHERE usage_estimated), COUNT(*) FILTER (WHERE blocked_by IS NOT NULL),
    SUM(would_cost_nanos), COUNT(*) FILTER (WHERE retry_count > 0 AND blocked_by IS NULL),
    COALESCE(SUM(cost_nanos) FILTER (WHERE retry_count > 0), 0)
FROM ledger
GROUP BY 1, 2, 3, 4, 5, 6, 7, 8;
