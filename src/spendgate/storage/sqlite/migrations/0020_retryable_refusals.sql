-- `blocks_hourly.retryable` counted every refusal answered 429 as told to retry: a budget
-- with nothing left answers OpenAI and Gemini clients 429 too, and loop detection every
-- client, both with x-should-retry: false. Recounted for the rows rolled up so far as
-- `spendgate.domain.totals.told_to_retry` counts them (the roll-up counts so from now on).
UPDATE blocks_hourly SET retryable = (
    SELECT COUNT(*) FROM ledger AS l
    WHERE l.ts >= blocks_hourly.hour AND l.ts < blocks_hourly.hour + 3600000
      AND l.blocked_by IS NOT NULL AND l.blocked_by = blocks_hourly.name
      AND l.id <= (SELECT rolled_to FROM rollup_mark)
      AND l.status = 429 AND l.blocked_by <> 'loop-detection'
      AND substr(COALESCE(l.error, ''), 1, 21) <> 'Budget exhausted for '
)
WHERE retryable > 0;
