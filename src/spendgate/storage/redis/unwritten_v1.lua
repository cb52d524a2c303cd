-- spendgate counters: rows charged before they were written (charge_v1) and now due,
-- oldest first (version 1): their gateway has not written them in time (it died, or the
-- ledger is down). They stay until forgotten, after the ledger has them.
--
-- KEYS: 1 unwritten-row index.
-- ARGV: 1 injected now_ms or '', 2 limit, 3 row key prefix.
-- Returns for each: id, row.

local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. int(clock_ms()),
  'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local row = redis.call('GET', ARGV[3] .. id)
  if row then
    out[#out + 1] = id
    out[#out + 1] = row
  else
    redis.call('ZREM', KEYS[1], id) -- forgotten between two writes
  end
end
return out
