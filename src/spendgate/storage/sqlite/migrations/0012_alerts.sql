-- Alerts, raised once: the unique key (kind, subject, member, period, mark) makes
-- INSERT OR IGNORE the test of "first to see it", across every process on the file.
CREATE TABLE alerts (
    id         INTEGER PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    member     TEXT NOT NULL,
    period_ms  INTEGER NOT NULL,
    mark       TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    title      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    UNIQUE (kind, subject, member, period_ms, mark)
);

-- The outbox: one row per alert and channel, claimed under a lease by whichever process
-- delivers it, retried until delivered or out of attempts.
CREATE TABLE alert_deliveries (
    id             INTEGER PRIMARY KEY,
    alert_id       INTEGER NOT NULL REFERENCES alerts (id),
    channel        TEXT NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_ms        INTEGER NOT NULL,
    claimed_by     TEXT,
    claim_until_ms INTEGER,
    last_error     TEXT,
    created_ms     INTEGER NOT NULL,
    delivered_ms   INTEGER,
    updated_ms     INTEGER NOT NULL
);

CREATE INDEX alert_deliveries_due ON alert_deliveries (status, next_ms);
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);
