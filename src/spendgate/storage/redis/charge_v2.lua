-- spendgate counters: charge a reservation before its ledger row is written, and keep
-- the row here until it is (version 2), idempotent by id; and in the same call forget rows
-- the ledger has since taken (what `forget_v1` does, without a round trip of its own).
--
-- What `settle_v1` does (charge each counter, take the reservation and its lease off),
-- and in the same step the request's ledger row is stored under KEYS[4] and indexed in
-- KEYS[3] by when a sweeper may write it: the gateway writes it to the ledger and then
-- forgets it; if the gateway dies first, whichever replica sees it due writes it
-- (idempotent by request id). Old versions' sweepers look only at reservations, so
-- they never see (nor charge) a row kept here.
--
-- KEYS: 1 reservation hash, 2 lease index, 3 unwritten-row index, 4 the row, then the
--       kept rows to forget.
-- ARGV: 1 injected now_ms or '', 2 reservation id, 3 ms before a sweeper may write the
--       row, 4 the row (the codec's text), 5 amount count, then the amounts to charge,
--       aligned with the reservation's counters, then the reservation ids of the rows to
--       forget, aligned with their keys.
-- Returns 1 if this call charged it, 0 if it had ended already (settled, released or
-- lapsed), or {-1, held} if the amounts do not match the counters it holds. The rows to
-- forget are forgotten whatever it returns (idempotent: a row already gone is no error).

local count = tonumber(ARGV[5])
for i = 5, #KEYS do
  redis.call('DEL', KEYS[i])
  redis.call('ZREM', KEYS[3], ARGV[5 + count + i - 4])
end

local found = redis.call('HMGET', KEYS[1], 'keys', 'buckets', 'amounts')
if not found[1] then
  return 0
end
local keys = cjson.decode(found[1])
if count ~= #keys then
  return {-1, #keys}
end
local i = 0
local buckets = {}
for b in string.gmatch(found[2], '[^,]+') do i = i + 1; buckets[i] = b end
i = 0
local reserved = {}
for a in string.gmatch(found[3], '[^,]+') do i = i + 1; reserved[i] = a end
for j, key in ipairs(keys) do
  redis.call('HINCRBY', key, 's' .. buckets[j], ARGV[5 + j])
  redis.call('HINCRBY', key, 'r' .. buckets[j], int(-tonumber(reserved[j])))
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('SET', KEYS[4], ARGV[4])
redis.call('ZADD', KEYS[3], int(clock_ms() + tonumber(ARGV[3])), ARGV[2])
return 1
