-- What the bill says beyond tokens, and what spendgate could not believe: why a provider's
-- usage was not believed (the row charges an estimate instead), the budgets a request was
-- charged more on than it reserved, the service tier the provider says it used, and the
-- server-side tool calls it billed (JSON: [["web_search", 2], ...]).
ALTER TABLE ledger ADD COLUMN usage_problem TEXT;
ALTER TABLE ledger ADD COLUMN settled_above TEXT NOT NULL DEFAULT '[]';
ALTER TABLE ledger ADD COLUMN service_tier TEXT;
ALTER TABLE ledger ADD COLUMN tool_calls TEXT NOT NULL DEFAULT '[]';
