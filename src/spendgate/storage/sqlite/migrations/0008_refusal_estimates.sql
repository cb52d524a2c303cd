-- A refused request's row, for what it would really have cost (`spendgate blocks`): the
-- fingerprint of its content (an SDK retry or a resend of it matches), its input priced at
-- the model's input rate, and the output rate (times choices, per million tokens) and
-- ceiling per choice it asked for. Rows refused before this migration keep NULL / 0.
ALTER TABLE ledger ADD COLUMN fingerprint TEXT;
ALTER TABLE ledger ADD COLUMN would_input_nanos INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN would_output_rate INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ledger ADD COLUMN would_ceiling INTEGER NOT NULL DEFAULT 0;
