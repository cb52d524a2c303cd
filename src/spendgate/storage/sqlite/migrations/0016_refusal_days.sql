-- `spendgate blocks` bounded by combinations, not by hours (`spendgate.storage.sqlite.
-- refusal_days`): the distinct refusals of 0014's rollups summed per combination up to
-- the end of each day it was refused on (running sums), so that a period's whole days are
-- two lookups per combination; and the estimate's per-caller output medians kept by the
-- roll-up job (`spendgate.storage.sqlite.medians`) instead of walked per report.

-- Per combination (as refusals_hourly) and UTC day with refusals: the sums of every
-- refusals_hourly row of that combination up to the end of that day. Kept by the job from
-- the same changes as refusals_hourly (a late row adds to its day and every later one).
CREATE TABLE refusals_daily (
    name             TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    model            TEXT NOT NULL,
    ceiling          INTEGER NOT NULL,
    rate             INTEGER NOT NULL,
    day              INTEGER NOT NULL,  -- epoch ms of the day's start (UTC)
    requests         INTEGER NOT NULL,  -- running sums, up to the end of `day`
    worst_case_nanos INTEGER NOT NULL,
    fixed_nanos      INTEGER NOT NULL,
    PRIMARY KEY (name, key_id, model, ceiling, rate, day)
) WITHOUT ROWID;

-- Every combination with a row in refusals_daily, its first and last day there, and its
-- sums over every day (the running sums of its last day): what a report walks (those
-- whose days overlap the period), one row each; most need no lookup in refusals_daily.
CREATE TABLE refusal_combos (
    name             TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    model            TEXT NOT NULL,
    ceiling          INTEGER NOT NULL,
    rate             INTEGER NOT NULL,
    first_day        INTEGER NOT NULL,
    last_day         INTEGER NOT NULL,
    requests         INTEGER NOT NULL,
    worst_case_nanos INTEGER NOT NULL,
    fixed_nanos      INTEGER NOT NULL,
    PRIMARY KEY (name, key_id, model, ceiling, rate)
) WITHOUT ROWID;

-- Per (key, model): the lower median of the output tokens of its newest 100 answered rows
-- (`spendgate.domain.refusals.RECENT_OUTPUTS`; blocked_by IS NULL AND status < 400, newest
-- by (ts, request_id)) among the ledger rows up to the job's mark, how many there were
-- (at most 100), and the times of the oldest and newest of them. A report uses a pair's
-- row when those samples are the ones its span would walk (see the module); a pair without
-- a row is walked.
CREATE TABLE answered_medians (
    key_id    TEXT NOT NULL,
    model     TEXT NOT NULL,
    median    INTEGER NOT NULL,
    samples   INTEGER NOT NULL,
    oldest_ts INTEGER NOT NULL,
    newest_ts INTEGER NOT NULL,
    PRIMARY KEY (key_id, model)
) WITHOUT ROWID;

-- The backfill: the running sums from refusals_hourly (exact up to the mark) ...
INSERT INTO refusals_daily
SELECT name, key_id, model, ceiling, rate, day,
    SUM(SUM(requests)) OVER combo, SUM(SUM(worst_case_nanos)) OVER combo,
    SUM(SUM(fixed_nanos)) OVER combo
FROM (SELECT *, hour - (((hour % 86400000) + 86400000) % 86400000) AS day FROM refusals_hourly)
GROUP BY name, key_id, model, ceiling, rate, day
WINDOW combo AS (PARTITION BY name, key_id, model, ceiling, rate ORDER BY day);

INSERT INTO refusal_combos
SELECT name, key_id, model, ceiling, rate,
    MIN(hour - (((hour % 86400000) + 86400000) % 86400000)),
    MAX(hour - (((hour % 86400000) + 86400000) % 86400000)),
    SUM(requests), SUM(worst_case_nanos), SUM(fixed_nanos)
FROM refusals_hourly GROUP BY name, key_id, model, ceiling, rate;

-- ... and the medians of the answered rows up to the mark: per pair, a walk of its newest
-- 100 down 0014's index, sorted by size there (`medians.keep` does the same per batch).
INSERT INTO answered_medians
SELECT p.key_id, p.model, (
        SELECT o FROM (
            SELECT o, ROW_NUMBER() OVER (ORDER BY o) AS by_size, COUNT(*) OVER () AS samples
            FROM (SELECT output_tokens AS o FROM ledger INDEXED BY ledger_answered
                WHERE key_id = p.key_id AND COALESCE(routed_model, requested_model) = p.model
                    AND blocked_by IS NULL AND status < 400 AND id <= p.mark
                ORDER BY ts DESC, request_id DESC LIMIT 100))
        WHERE by_size = (samples + 1) / 2),
    (SELECT COUNT(*) FROM (SELECT 1 FROM ledger INDEXED BY ledger_answered
        WHERE key_id = p.key_id AND COALESCE(routed_model, requested_model) = p.model
            AND blocked_by IS NULL AND status < 400 AND id <= p.mark
        ORDER BY ts DESC, request_id DESC LIMIT 100)),
    (SELECT MIN(ts) FROM (SELECT ts FROM ledger INDEXED BY ledger_answered
        WHERE key_id = p.key_id AND COALESCE(routed_model, requested_model) = p.model
            AND blocked_by IS NULL AND status < 400 AND id <= p.mark
        ORDER BY ts DESC, request_id DESC LIMIT 100)),
    (SELECT ts FROM ledger INDEXED BY ledger_answered
        WHERE key_id = p.key_id AND COALESCE(routed_model, requested_model) = p.model
            AND blocked_by IS NULL AND status < 400 AND id <= p.mark
        ORDER BY ts DESC, request_id DESC LIMIT 1)
FROM (
    SELECT DISTINCT key_id, COALESCE(routed_model, requested_model) AS model,
        (SELECT rolled_to FROM rollup_mark) AS mark
    FROM ledger INDEXED BY ledger_answered
    WHERE blocked_by IS NULL AND status < 400 AND id <= (SELECT rolled_to FROM rollup_mark)
) AS p;
