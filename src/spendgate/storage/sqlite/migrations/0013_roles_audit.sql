-- Admin tokens (roles: org_admin, team_admin, viewer) and the audit log of admin changes.
-- Tokens are stored as the SHA-256 of their secret, never the secret; times are epoch ms.
CREATE TABLE admin_tokens (
    id          TEXT PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    hint        TEXT NOT NULL,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    team        TEXT,
    created_at  INTEGER NOT NULL,
    created_by  TEXT NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);

-- Append-only. `seq` orders entries written in the same millisecond; `before_json` and
-- `after_json` are JSON objects without secrets (NULL: nothing before, or nothing after).
CREATE TABLE audit_log (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    at_ms       INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    target      TEXT NOT NULL,
    team        TEXT,
    before_json TEXT,
    after_json  TEXT
);
CREATE INDEX audit_log_at ON audit_log (at_ms);
CREATE INDEX audit_log_team_at ON audit_log (team, at_ms);
