-- spendgate counters: prune the counters of many budgets in one call (version 1).
--
-- KEYS: the member sets of the budgets (one per budget).
-- ARGV: 1 now (unused), then since_ms for each key, in the order of KEYS.
-- Deletes each budget's buckets older than its since_ms with nothing reserved (as
-- maintain_v1's 'prune' does for one budget); a budget with no member set costs one
-- SMEMBERS of a missing key. Returns how many buckets.

local count = 0
for k, members in ipairs(KEYS) do
  local since = tonumber(ARGV[k + 1])
  for _, key in ipairs(redis.call('SMEMBERS', members)) do
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
      redis.call('SREM', members, key)
    end
  end
end
return count
