-- spendgate counters: reset the counters of one budget (version 1).
--
-- KEYS: 1 the budget's member set.
-- ARGV: 1 now (unused), 2 'reset', 3 since_ms, 4 key prefix a counter must start with
--       ('' for every member).
-- Zeroes the spent amount of buckets from since_ms on. Returns how many buckets.
-- (Pruning old buckets is prune_v1.lua, many budgets a call.)

local since = tonumber(ARGV[3])
local count = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(key, 1, #ARGV[4]) == ARGV[4] then
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if string.sub(name, 1, 1) == 's' and tonumber(string.sub(name, 2)) >= since then
        redis.call('HSET', key, name, '0')
        count = count + 1
      end
    end
  end
end
return count
