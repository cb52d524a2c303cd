-- Keys and the ledger. Times are integer epoch milliseconds UTC; JSON columns hold
-- arrays/objects as text; booleans are 0/1. No foreign key from ledger to api_keys:
-- a ledger row must outlive the key that made it.

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
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER,
    revoked_at     INTEGER
);

CREATE TABLE ledger (
    id                  INTEGER PRIMARY KEY,
    request_id          TEXT NOT NULL UNIQUE,
    ts                  INTEGER NOT NULL,
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
    input_tokens        INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens  INTEGER NOT NULL,
    output_tokens       INTEGER NOT NULL,
    reasoning_tokens    INTEGER NOT NULL,
    cost_nanos          INTEGER NOT NULL,
    status              INTEGER NOT NULL,
    latency_ms          REAL NOT NULL,
    ttfb_ms             REAL,
    streamed            INTEGER NOT NULL CHECK (streamed IN (0, 1)),
    client_disconnected INTEGER NOT NULL CHECK (client_disconnected IN (0, 1)),
    usage_estimated     INTEGER NOT NULL CHECK (usage_estimated IN (0, 1)),
    upstream_request_id TEXT,
    error               TEXT
);

-- Reports scan a time range, overall or for one team / one key (budgets, `usage --by`).
CREATE INDEX ledger_ts ON ledger (ts);
CREATE INDEX ledger_team_ts ON ledger (team, ts);
CREATE INDEX ledger_key_ts ON ledger (key_id, ts);
