-- The ledger's (team, ts) index has no reader left: a team's rows are read with the
-- period's (`ledger_ts`) and filtered by team in Python (`storage/team_view.py`), reports
-- group by team from the hourly rollups (0011), and the raw tails go by id (NOT INDEXED).
-- Every index is written on each request's insert (docs/benchmarks.md, "Ledger indexes on
-- the request path"): this one is dropped to pay for 0014's two on answered rows.
DROP INDEX IF EXISTS ledger_team_ts;
