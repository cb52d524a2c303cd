-- spendgate counters: extend the leases of one owner (version 1), never shortening one.
--
-- KEYS: 1 the owner's set, 2 lease index.
-- ARGV: 1 injected now_ms or '', 2 lease length ms, 3 reservation key prefix, then the
--       ids to leave lapsing.
-- Returns how many leases were extended.

local expires = clock_ms() + tonumber(ARGV[2])
local keep = {}
for i = 4, #ARGV do keep[ARGV[i]] = true end
local renewed = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if not keep[id] then
    local key = ARGV[3] .. id
    local current = redis.call('HGET', key, 'expires')
    if current then
      if tonumber(current) < expires then
        redis.call('HSET', key, 'expires', int(expires))
        redis.call('ZADD', KEYS[2], int(expires), id)
      end
      renewed = renewed + 1
    else
      redis.call('SREM', KEYS[1], id)
    end
  end
end
return renewed
