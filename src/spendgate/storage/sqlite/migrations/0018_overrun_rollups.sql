-- The budgets view's overruns bounded by budgets and members, not by overrun rows
-- (`spendgate.storage.sqlite.overrun_sql`): per budget name, scope and member, the ledger
-- rows settled above that budget, per hour, with running sums per day and the list of
-- (name, scope, member) as 0016 keeps them for refusals (`day_sums`). Kept by the roll-up
-- job with the other rollups (same mark), backfilled here for the rows up to the mark.
--
-- A row counts once for each name it was settled above and each of its members under
-- each scope (`spendgate.domain.marks.row_members`): its org, team, service, user, key,
-- session, routed model, and each of its tags; a member that is NULL is left out (no
-- view has it). The view reads the counts of its budgets' scopes.

CREATE TABLE overruns_hourly (
    hour     INTEGER NOT NULL,
    name     TEXT NOT NULL,     -- a name of settled_above
    scope    TEXT NOT NULL,     -- BudgetScope's value
    member   TEXT NOT NULL,
    overruns INTEGER NOT NULL,  -- rows
    PRIMARY KEY (hour, name, scope, member)
) WITHOUT ROWID;

-- Per (name, scope, member) and UTC day with overruns: overruns_hourly's rows summed up
-- to the end of that day (running sums).
CREATE TABLE overruns_daily (
    name     TEXT NOT NULL,
    scope    TEXT NOT NULL,
    member   TEXT NOT NULL,
    day      INTEGER NOT NULL,  -- epoch ms of the day's start (UTC)
    overruns INTEGER NOT NULL,  -- running sum, up to the end of `day`
    PRIMARY KEY (name, scope, member, day)
) WITHOUT ROWID;

-- Every (name, scope, member) of overruns_daily, its first and last day, its sum.
CREATE TABLE overrun_combos (
    name      TEXT NOT NULL,
    scope     TEXT NOT NULL,
    member    TEXT NOT NULL,
    first_day INTEGER NOT NULL,
    last_day  INTEGER NOT NULL,
    overruns  INTEGER NOT NULL,
    PRIMARY KEY (name, scope, member)
) WITHOUT ROWID;

-- The backfill: `overrun_sql.ROLL` over the ids up to the mark (by 0017's partial index,
-- each row once: CROSS JOIN keeps the ledger outermost).
INSERT INTO overruns_hourly
SELECT ts - (((ts % 3600000) + 3600000) % 3600000), name, scope, member, COUNT(DISTINCT id)
FROM (
    SELECT l.id, l.ts, o.value AS name, s.scope, CASE s.scope WHEN 'org' THEN l.org
        WHEN 'team' THEN l.team WHEN 'service' THEN l.service WHEN 'user' THEN l."user"
        WHEN 'key' THEN l.key_id WHEN 'session' THEN l.session_id ELSE l.routed_model
        END AS member
    FROM ledger AS l INDEXED BY ledger_overrun CROSS JOIN json_each(l.settled_above) AS o
        CROSS JOIN (SELECT 'org' AS scope UNION ALL SELECT 'team' UNION ALL SELECT 'service'
        UNION ALL SELECT 'user' UNION ALL SELECT 'key' UNION ALL SELECT 'session'
        UNION ALL SELECT 'model') AS s
    WHERE l.settled_above != '[]' AND l.id <= (SELECT rolled_to FROM rollup_mark)
    UNION ALL
    SELECT l.id, l.ts, o.value, 'tag', t.value
    FROM ledger AS l INDEXED BY ledger_overrun CROSS JOIN json_each(l.settled_above) AS o
        CROSS JOIN json_each(l.tags) AS t
    WHERE l.settled_above != '[]' AND l.id <= (SELECT rolled_to FROM rollup_mark)
)
WHERE member IS NOT NULL
GROUP BY 1, name, scope, member;

INSERT INTO overruns_daily
SELECT name, scope, member, day, SUM(SUM(overruns)) OVER combo
FROM (SELECT *, hour - (((hour % 86400000) + 86400000) % 86400000) AS day
    FROM overruns_hourly)
GROUP BY name, scope, member, day
WINDOW combo AS (PARTITION BY name, scope, member ORDER BY day);

INSERT INTO overrun_combos
SELECT name, scope, member,
    MIN(hour - (((hour % 86400000) + 86400000) % 86400000)),
    MAX(hour - (((hour % 86400000) + 86400000) % 86400000)),
    SUM(overruns)
FROM overruns_hourly GROUP BY name, scope, member;
