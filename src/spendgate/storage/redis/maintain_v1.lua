-- spendgate counters: prune and reset the counters of one budget (version 1).
--
-- KEYS: 1 the budget's member set.
-- ARGV: 1 now (unused), 2 'prune' or 'reset', 3 since_ms, 4 key prefix a counter must
--       start with ('' for every member; reset only).
-- prune: delete buckets older than since_ms with nothing reserved; reset: zero the spent
-- amount of buckets from since_ms on. Returns how many buckets.

local since = tonumber(ARGV[3])
local count = 0
for _, key in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if ARGV[2] == 'prune' then
    local fields = redis.call('HGETALL', key)
    for i = 1, #fields, 2 do
      local name = fields[i]
      if string.sub(name, 1, 1) == 'r' then
        local bucket = string.sub(name, 2)
        if tonumber(bucket) < since and tonumber(fields[i + 1]) == 0 then
          redis.call('HDEL', key, name, 's' .. bucket)
          count = count + 1
        end
      end
    end
    if redis.call('EXISTS', key) == 0 then
      redis.call('SREM', KEYS[1], key)
    end
  elseif string.sub(key, 1, #ARGV[4]) == ARGV[4] then
    for _, name in ipairs(redis.call('HKEYS', key)) do
      if string.sub(name, 1, 1) == 's' and tonumber(string.sub(name, 2)) >= since then
        redis.call('HSET', key, name, '0')
        count = count + 1
      end
    end
  end
end
return count
