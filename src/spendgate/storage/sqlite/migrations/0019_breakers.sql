-- Circuit breakers shared by every process on the file: per (key, model), the failures in
-- a row, when it last opened (NULL: closed) and until when a half-open probe is out
-- (`spendgate.domain.breaker`). A success deletes the row.
CREATE TABLE breakers (
    key_id         TEXT NOT NULL,
    model          TEXT NOT NULL,
    failures       INTEGER NOT NULL,
    opened_ms      INTEGER,
    probe_until_ms INTEGER,
    failed_ms      INTEGER NOT NULL,  -- the last failure: rows idle long enough are pruned
    PRIMARY KEY (key_id, model)
) WITHOUT ROWID;
