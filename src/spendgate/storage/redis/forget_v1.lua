-- spendgate counters: forget rows the ledger now has (version 1), idempotent.
--
-- KEYS: 1 unwritten-row index.
-- ARGV: 1 now (unused), 2 row key prefix, then the reservation ids.
-- Returns how many rows were still kept.

local n = 0
for i = 3, #ARGV do
  n = n + redis.call('DEL', ARGV[2] .. ARGV[i])
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return n
