-- spendgate counters: reservations whose lease expired (version 1), oldest first.
-- They stay until settled: whichever replica settles one first wins (settle_v1).
--
-- KEYS: 1 lease index.
-- ARGV: 1 injected now_ms or '', 2 limit, 3 reservation key prefix.
-- Returns for each: id, counters, buckets, amounts, ceiling, worst, template.

local now = clock_ms()
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(now), 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local f = redis.call('HMGET', ARGV[3] .. id,
    'counters', 'buckets', 'amounts', 'ceiling', 'worst', 'template')
  if f[1] then
    out[#out + 1] = id
    for j = 1, 6 do out[#out + 1] = f[j] end
  else
    redis.call('ZREM', KEYS[1], id) -- a reservation ended between two writes: forget it
  end
end
return out
