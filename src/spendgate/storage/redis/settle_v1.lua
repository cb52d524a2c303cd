-- spendgate counters: settle or release a reservation (version 1), idempotent by id.
--
-- KEYS: 1 reservation hash, 2 lease index.
-- ARGV: 1 now (unused), 2 reservation id, 3 amount count
--       (-1: a release, nothing charged), then the amounts to charge, aligned with the
--       reservation's counters.
-- Returns 1 if this call ended the reservation, 0 if it was already ended, or
-- {-1, held} if the amounts do not match the counters it holds.

local found = redis.call('HMGET', KEYS[1], 'keys', 'buckets', 'amounts')
if not found[1] then
  return 0
end
local keys = cjson.decode(found[1])
local count = tonumber(ARGV[3])
if count >= 0 and count ~= #keys then
  return {-1, #keys}
end
local i = 0
local buckets = {}
for b in string.gmatch(found[2], '[^,]+') do i = i + 1; buckets[i] = b end
i = 0
local reserved = {}
for a in string.gmatch(found[3], '[^,]+') do i = i + 1; reserved[i] = a end
for j, key in ipairs(keys) do
  if count >= 0 then
    redis.call('HINCRBY', key, 's' .. buckets[j], ARGV[3 + j])
  end
  redis.call('HINCRBY', key, 'r' .. buckets[j], int(-tonumber(reserved[j])))
end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
