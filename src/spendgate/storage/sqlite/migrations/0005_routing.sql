-- Routing: the model that served each request and the rule that chose it, what the request
-- would have cost on the model it asked for (savings), what a shadow rule would have done,
-- and which attempt of a fallback chain the row is.
ALTER TABLE ledger ADD COLUMN routed_model TEXT;
ALTER TABLE ledger ADD COLUMN route_rule TEXT;
ALTER TABLE ledger ADD COLUMN route_kind TEXT;
ALTER TABLE ledger ADD COLUMN baseline_model TEXT;
ALTER TABLE ledger ADD COLUMN baseline_cost_nanos INTEGER;
ALTER TABLE ledger ADD COLUMN shadow_rule TEXT;
ALTER TABLE ledger ADD COLUMN shadow_model TEXT;
ALTER TABLE ledger ADD COLUMN shadow_cost_nanos INTEGER;
ALTER TABLE ledger ADD COLUMN attempt INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN fallback_from TEXT;
