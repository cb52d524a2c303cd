-- The hashes of secrets a rotation replaced, so that a client still sending one is told
-- its key was rotated, not only that the gateway does not know it. Hashes only, never a
-- secret; one indexed lookup on the path of an unknown key, none on any other.
CREATE TABLE retired_key_hashes (
    key_hash   TEXT PRIMARY KEY,
    key_id     TEXT NOT NULL,
    retired_ms INTEGER NOT NULL
);
