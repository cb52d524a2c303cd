-- `spendgate blocks` from rollups: the distinct refused requests per hour and per what
-- their estimate depends on (`spendgate.storage.sqlite.refusal_sql`), kept by the roll-up
-- job with the other rollups (same mark), backfilled here for the rows up to the mark.

CREATE TABLE refusals_hourly (
    hour             INTEGER NOT NULL,
    name             TEXT NOT NULL,     -- blocked_by
    key_id           TEXT NOT NULL,
    model            TEXT NOT NULL,     -- COALESCE(routed_model, requested_model)
    ceiling          INTEGER NOT NULL,  -- would_ceiling
    rate             INTEGER NOT NULL,  -- would_output_rate
    requests         INTEGER NOT NULL,  -- distinct refused requests (repeats left out)
    worst_case_nanos INTEGER NOT NULL,
    fixed_nanos      INTEGER NOT NULL,  -- their estimates' input part (worst case before 0008)
    PRIMARY KEY (hour, name, key_id, model, ceiling, rate)
) WITHOUT ROWID;

-- Earlier refusals of the same content from the same key (the retry window's chaining).
CREATE INDEX ledger_refused_fp ON ledger (key_id, fingerprint, ts)
    WHERE blocked_by IS NOT NULL AND fingerprint IS NOT NULL;
-- The newest answered requests per (key, model) and per model (`Ledger.recent_outputs`,
-- the estimate's samples): a few index pages per pair instead of a scan of 30 days.
CREATE INDEX ledger_answered ON ledger
    (key_id, COALESCE(routed_model, requested_model), ts, request_id, output_tokens)
    WHERE blocked_by IS NULL AND status < 400;
CREATE INDEX ledger_answered_model ON ledger
    (COALESCE(routed_model, requested_model), ts, request_id, output_tokens)
    WHERE blocked_by IS NULL AND status < 400;

-- The backfill: `refusal_sql.ROLL_NEW` over the ids up to the mark.
INSERT INTO refusals_hourly (hour, name, key_id, model, ceiling, rate, requests, worst_case_nanos, fixed_nanos) SELECT r.ts - (((r.ts % 3600000) + 3600000) % 3600000), r.blocked_by, r.key_id, COALESCE(r.routed_model, r.requested_model), r.would_ceiling, r.would_output_rate, COUNT(*), SUM(r.would_cost_nanos), SUM(CASE WHEN r.would_output_rate = 0 AND r.would_input_nanos = 0 THEN r.would_cost_nanos ELSE r.would_input_nanos END) FROM ledger AS r NOT INDEXED WHERE r.id > 0 AND r.id <= (SELECT rolled_to FROM rollup_mark) AND r.blocked_by IS NOT NULL AND NOT (r.retry_count > 0 OR EXISTS (SELECT 1 FROM ledger AS p WHERE ((p.request_id = (CASE WHEN r.attempt > 0 AND substr(r.request_id, -length(r.attempt) - 1) = '-' || r.attempt THEN substr(r.request_id, 1, length(r.request_id) - length(r.attempt) - 1) ELSE r.request_id END) AND (p.attempt = 0 OR substr(p.request_id, -length(p.attempt) - 1) != '-' || p.attempt)) OR (p.request_id > (CASE WHEN r.attempt > 0 AND substr(r.request_id, -length(r.attempt) - 1) = '-' || r.attempt THEN substr(r.request_id, 1, length(r.request_id) - length(r.attempt) - 1) ELSE r.request_id END) || '-' AND p.request_id < (CASE WHEN r.attempt > 0 AND substr(r.request_id, -length(r.attempt) - 1) = '-' || r.attempt THEN substr(r.request_id, 1, length(r.request_id) - length(r.attempt) - 1) ELSE r.request_id END) || '.' AND p.attempt > 0 AND p.request_id = (CASE WHEN r.attempt > 0 AND substr(r.request_id, -length(r.attempt) - 1) = '-' || r.attempt THEN substr(r.request_id, 1, length(r.request_id) - length(r.attempt) - 1) ELSE r.request_id END) || '-' || p.attempt)) AND p.blocked_by IS NOT NULL AND p.id <= (SELECT rolled_to FROM rollup_mark) AND +p.ts >= -9223372036854775808 AND (+p.ts, p.retry_count, p.attempt, p.request_id) < (r.ts, r.retry_count, r.attempt, r.request_id)) OR (r.fingerprint IS NOT NULL AND EXISTS (SELECT 1 FROM ledger AS p INDEXED BY ledger_refused_fp WHERE p.blocked_by IS NOT NULL AND p.fingerprint IS NOT NULL AND p.key_id = r.key_id AND p.fingerprint = r.fingerprint AND p.ts >= MAX(r.ts - 5000, -9223372036854775808) AND p.ts <= r.ts AND p.id <= (SELECT rolled_to FROM rollup_mark) AND (+p.ts, p.retry_count, p.attempt, p.request_id) < (r.ts, r.retry_count, r.attempt, r.request_id)))) GROUP BY 1, 2, 3, 4, 5, 6 ON CONFLICT (hour, name, key_id, model, ceiling, rate) DO UPDATE SET requests = requests + excluded.requests, worst_case_nanos = worst_case_nanos + excluded.worst_case_nanos, fixed_nanos = fixed_nanos + excluded.fixed_nanos;
