-- spendgate counters: extend leases (version 1), never shortening one.
--
-- KEYS: 1 lease index.
-- ARGV: 1 injected now_ms or '', 2 lease length ms, 3 reservation key prefix, then the
--       ids of the reservations to extend (those the calling process knows it holds).
-- Returns {how many were extended, then the ids that no longer exist}.

local expires = clock_ms() + tonumber(ARGV[2])
local renewed = 0
local gone = {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local key = ARGV[3] .. id
  local current = redis.call('HGET', key, 'expires')
  if current then
    if tonumber(current) < expires then
      redis.call('HSET', key, 'expires', int(expires))
      redis.call('ZADD', KEYS[1], int(expires), id)
    end
    renewed = renewed + 1
  else
    gone[#gone + 1] = id
  end
end
return {renewed, gone}
