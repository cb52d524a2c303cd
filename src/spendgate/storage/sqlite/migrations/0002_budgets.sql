-- Budgets: live counters, durable reservation leases, runtime limit overrides; and the
-- ledger columns that say how a request was admitted and whether it was ever reconciled.
-- Amounts are integers in the counter's unit: nano-dollars ('usd') or tokens ('tokens').

ALTER TABLE ledger ADD COLUMN output_ceiling INTEGER;
ALTER TABLE ledger ADD COLUMN clamped_from INTEGER;
ALTER TABLE ledger ADD COLUMN unreconciled INTEGER NOT NULL DEFAULT 0
    CHECK (unreconciled IN (0, 1));

-- One row per (budget, member, time bucket). A window sums the rows of its budget and
-- member with bucket_ms >= the window's start. The unit is part of the key so that a
-- budget switched from dollars to tokens starts a fresh counter instead of comparing
-- tokens with nano-dollars. `reserved` is the sum of the live reservations on the row.
CREATE TABLE budget_counters (
    budget    TEXT NOT NULL,
    member    TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    unit      TEXT NOT NULL,
    spent     INTEGER NOT NULL DEFAULT 0,
    reserved  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, member, unit, bucket_ms)
) WITHOUT ROWID;

-- A reservation in flight, held by one gateway process (owner) under a lease.
-- counters: JSON [[budget, member, bucket_ms, unit, amount], ...] in the plan's order;
-- worst: JSON of the WorstCase; template: JSON of the LedgerRow written if the lease lapses.
-- WITHOUT ROWID: one b-tree keyed by id instead of a rowid table plus an id index (one page
-- fewer to write per reserve and per settle, ~8 us each).
CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    counters   TEXT NOT NULL,
    ceiling    INTEGER NOT NULL,
    worst      TEXT NOT NULL,
    template   TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX reservations_expires ON reservations (expires_ms);
CREATE INDEX reservations_owner ON reservations (owner);

-- Runtime limits: the latest one in force (expires_ms NULL or in the future) replaces the
-- configured limit of its budget.
CREATE TABLE budget_overrides (
    id           INTEGER PRIMARY KEY,
    budget       TEXT NOT NULL,
    limit_amount INTEGER NOT NULL,
    expires_ms   INTEGER,
    created_ms   INTEGER NOT NULL
);
CREATE INDEX budget_overrides_budget ON budget_overrides (budget, created_ms);
