-- Alerts, raised once, as on SQLite (its 0012): the unique key (kind, subject, member,
-- period, mark) makes INSERT ... ON CONFLICT DO NOTHING the test of "first to see it",
-- across every gateway on the database; only the inserter adds the deliveries, in the
-- same transaction. Times are epoch milliseconds; the payload is JSON text.
CREATE TABLE alerts (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind       TEXT NOT NULL,
    subject    TEXT NOT NULL,
    member     TEXT NOT NULL,
    period_ms  BIGINT NOT NULL,
    mark       TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    title      TEXT NOT NULL,
    payload    TEXT NOT NULL,
    UNIQUE (kind, subject, member, period_ms, mark)
);

-- The outbox: one row per alert and channel, claimed under a lease (FOR UPDATE SKIP
-- LOCKED: gateways claiming at once take disjoint rows) by whichever gateway delivers it,
-- retried until delivered or out of attempts.
CREATE TABLE alert_deliveries (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id       BIGINT NOT NULL REFERENCES alerts (id),
    channel        TEXT NOT NULL,
    status         TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_ms        BIGINT NOT NULL,
    claimed_by     TEXT,
    claim_until_ms BIGINT,
    last_error     TEXT,
    created_ms     BIGINT NOT NULL,
    delivered_ms   BIGINT,
    updated_ms     BIGINT NOT NULL
);

-- Polls look only at pending rows, oldest due first.
CREATE INDEX alert_deliveries_due ON alert_deliveries (next_ms, id) WHERE status = 'pending';
CREATE INDEX alert_deliveries_alert ON alert_deliveries (alert_id);
