-- `blocks_hourly.retryable` counted every refusal answered 429 as told to retry: a budget
-- with nothing left answers OpenAI and Gemini clients 429 too, and loop detection every
-- client, both with x-should-retry: false. Recounted as
-- `spendgate.domain.totals.told_to_retry` counts them (the insert counts so from now on).
UPDATE blocks_hourly AS b SET retryable = (
    SELECT COUNT(*) FROM ledger AS l
    WHERE l.ts >= b.hour_ms AND l.ts < b.hour_ms + 3600000 AND l.blocked_by IS NOT NULL
      AND l.blocked_by = b.name
      AND l.status = 429 AND l.blocked_by <> 'loop-detection'
      AND substr(COALESCE(l.error, ''), 1, 21) <> 'Budget exhausted for '
)
WHERE b.retryable > 0;
