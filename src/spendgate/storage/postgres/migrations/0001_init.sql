-- The whole schema of the PostgreSQL backend as of its first release: keys, the ledger
-- (partitioned by month), live counters, reservations, overrides and loop blocks.
-- Times are integer epoch milliseconds UTC, as on SQLite, so that both backends share
-- one row codec; JSON columns hold arrays/objects as text. Statements that order by a
-- name say COLLATE "C": names sort bytewise, as on SQLite, whatever the server's locale.

CREATE TABLE api_keys (
    id             TEXT PRIMARY KEY,
    key_hash       TEXT NOT NULL UNIQUE,
    hint           TEXT NOT NULL,
    name           TEXT NOT NULL,
    "user"         TEXT,
    service        TEXT,
    team           TEXT,
    org            TEXT,
    tags           TEXT NOT NULL DEFAULT '[]',
    allowed_models TEXT NOT NULL DEFAULT '[]',
    metadata       TEXT NOT NULL DEFAULT '{}',
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT,
    revoked_at     BIGINT
);

CREATE TABLE retired_key_hashes (
    key_hash   TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    retired_ms BIGINT NOT NULL
);

-- One row per request, partitioned by month of ts (ledger_pYYYYMM; created ahead by the
-- gateway and on demand, dropped past storage.retention_months). A unique index on a
-- partitioned table must include the partition key, so idempotency by request id lives
-- in ledger_ids (one small row per request, not partitioned): a row is inserted only
-- when its request id is new there, in the same statement.
CREATE TABLE ledger (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY,
    request_id          TEXT NOT NULL,
    ts                  BIGINT NOT NULL,
    surface             TEXT NOT NULL,
    key_id              TEXT NOT NULL,
    "user"              TEXT,
    service             TEXT,
    team                TEXT,
    org                 TEXT,
    tags                TEXT NOT NULL DEFAULT '[]',
    requested_model     TEXT NOT NULL,
    served_model        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    input_tokens        BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens  BIGINT NOT NULL,
    output_tokens       BIGINT NOT NULL,
    reasoning_tokens    BIGINT NOT NULL,
    cost_nanos          BIGINT NOT NULL,
    status              INTEGER NOT NULL,
    latency_ms          DOUBLE PRECISION NOT NULL,
    ttfb_ms             DOUBLE PRECISION,
    streamed            BOOLEAN NOT NULL,
    client_disconnected BOOLEAN NOT NULL,
    usage_estimated     BOOLEAN NOT NULL,
    upstream_request_id TEXT,
    error               TEXT,
    output_ceiling      BIGINT,
    clamped_from        BIGINT,
    unreconciled        BOOLEAN NOT NULL DEFAULT FALSE,
    session_id          TEXT,
    retry_count         INTEGER NOT NULL DEFAULT 0,
    blocked_by          TEXT,
    would_cost_nanos    BIGINT NOT NULL DEFAULT 0,
    shadow_blocks       TEXT NOT NULL DEFAULT '[]',
    routed_model        TEXT,
    route_rule          TEXT,
    route_kind          TEXT,
    baseline_model      TEXT,
    baseline_cost_nanos BIGINT,
    shadow_rule         TEXT,
    shadow_model        TEXT,
    shadow_cost_nanos   BIGINT,
    attempt             INTEGER NOT NULL DEFAULT 0,
    fallback_from       TEXT,
    usage_problem       TEXT,
    settled_above       TEXT NOT NULL DEFAULT '[]',
    service_tier        TEXT,
    tool_calls          TEXT NOT NULL DEFAULT '[]',
    fingerprint         TEXT,
    would_input_nanos   BIGINT NOT NULL DEFAULT 0,
    would_output_rate   BIGINT NOT NULL DEFAULT 0,
    would_ceiling       BIGINT NOT NULL DEFAULT 0
) PARTITION BY RANGE (ts);

-- Indexes on the partitioned table: each partition gets its own. Reports scan a time
-- range (usage, savings, ledger, blocks), one key's rows (latest_of_key, budgets by key),
-- one team's; a request is looked up by id; refusals and sessions have partial indexes.
CREATE INDEX ledger_ts ON ledger (ts, id);
CREATE INDEX ledger_team_ts ON ledger (team, ts);
CREATE INDEX ledger_key_ts ON ledger (key_id, ts);
CREATE INDEX ledger_request ON ledger (request_id);
CREATE INDEX ledger_blocked ON ledger (ts) WHERE blocked_by IS NOT NULL;
CREATE INDEX ledger_session ON ledger (session_id, ts) WHERE session_id IS NOT NULL;

CREATE TABLE ledger_ids (
    request_id TEXT PRIMARY KEY,
    ts         BIGINT NOT NULL
);
CREATE INDEX ledger_ids_ts ON ledger_ids (ts);

-- Live counters: one row per (budget, member, unit, time bucket); a window sums the rows
-- of its budget and member from the window's start. `reserved` is the sum of the live
-- reservations on the row.
CREATE TABLE budget_counters (
    budget    TEXT NOT NULL,
    member    TEXT NOT NULL,
    unit      TEXT NOT NULL,
    bucket_ms BIGINT NOT NULL,
    spent     BIGINT NOT NULL DEFAULT 0,
    reserved  BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (budget, member, unit, bucket_ms)
);

-- A reservation in flight, held by one gateway process (owner) under a lease; the JSON
-- columns are those of the SQLite backend (`spendgate.storage.codec`).
CREATE TABLE reservations (
    id         TEXT PRIMARY KEY,
    owner      TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    created_ms BIGINT NOT NULL,
    counters   TEXT NOT NULL,
    ceiling    BIGINT NOT NULL,
    worst      TEXT NOT NULL,
    template   TEXT NOT NULL
);
CREATE INDEX reservations_expires ON reservations (expires_ms, id);
CREATE INDEX reservations_owner ON reservations (owner);

CREATE TABLE budget_overrides (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    budget       TEXT NOT NULL,
    limit_amount BIGINT NOT NULL,
    expires_ms   BIGINT,
    created_ms   BIGINT NOT NULL
);
CREATE INDEX budget_overrides_budget ON budget_overrides (budget, created_ms);

CREATE TABLE loop_blocks (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    model       TEXT NOT NULL,
    strikes     INTEGER NOT NULL,
    detected_ms BIGINT NOT NULL,
    until_ms    BIGINT NOT NULL
);
CREATE INDEX loop_blocks_until ON loop_blocks (until_ms);
