-- Rate limits and runaway protection: who was refused by what, what it would have cost,
-- which shadow limits a request would have hit, sessions and SDK retries.
ALTER TABLE ledger ADD COLUMN session_id TEXT;
ALTER TABLE ledger ADD COLUMN retry_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN blocked_by TEXT;
ALTER TABLE ledger ADD COLUMN would_cost_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN shadow_blocks TEXT NOT NULL DEFAULT '[]';
CREATE INDEX ledger_blocked ON ledger (ts) WHERE blocked_by IS NOT NULL;
CREATE INDEX ledger_session ON ledger (session_id, ts) WHERE session_id IS NOT NULL;
