-- What a budgets view reads of its window's marked rows (`SqliteLedger.view_marks`): the
-- overruns, and each caller's newest refusal for an exhausted budget. Each had to walk
-- every refused or overrun row of the window (`ledger_marked`) and read it from the table;
-- these two partial indexes hold only the rows each needs. Nothing is added to an
-- answered request's insert: only an overrun or a refusal as over budget gets an entry.
-- The second index's expression must stay the query's (`ledger.py`, `_VIEW_MARKS`:
-- `BUDGET_EXHAUSTED` is 21 characters; `test_the_budgets_view_reads_by_its_own_indexes`).
CREATE INDEX ledger_overrun ON ledger (ts) WHERE settled_above != '[]';
CREATE INDEX ledger_exhausted ON ledger (ts)
    WHERE blocked_by IS NOT NULL AND substr(error, 1, 21) = 'Budget exhausted for ';
