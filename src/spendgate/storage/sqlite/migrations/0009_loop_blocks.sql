-- Loop escalation: each (key, fingerprint) detected looping, with its strikes (repeat
-- detections in a row) and the end of its block. The id is a hash of the pair
-- (`spendgate.domain.loops.loop_id`): what an operator releases it by, and its lookup.
CREATE TABLE loop_blocks (
    id          TEXT PRIMARY KEY,
    key_id      TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    model       TEXT NOT NULL,
    strikes     INTEGER NOT NULL,
    detected_ms INTEGER NOT NULL,
    until_ms    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX loop_blocks_until ON loop_blocks (until_ms);
