-- spendgate counters: set a runtime limit for a budget (version 1).
--
-- KEYS: 1 overrides hash, 2 sequence counter.
-- ARGV: 1 now (unused), 2 budget, 3 created_ms, 4 limit, 5 expires_ms or -1.
-- An override without expiry supersedes the budget's earlier ones; one with an expiry
-- drops those that had expired when it was made. Stored: [created, seq, limit, expires].

local created = tonumber(ARGV[3])
local expires = tonumber(ARGV[5])
local kept = {}
local raw = redis.call('HGET', KEYS[1], ARGV[2])
if raw then
  for _, o in ipairs(cjson.decode(raw)) do
    if not (expires < 0 or (o[4] >= 0 and o[4] <= created)) then
      kept[#kept + 1] = string.format('[%d,%d,%d,%d]', o[1], o[2], o[3], o[4])
    end
  end
end
local seq = redis.call('INCR', KEYS[2])
kept[#kept + 1] = string.format('[%d,%d,%s,%d]', created, seq, ARGV[4], expires)
redis.call('HSET', KEYS[1], ARGV[2], '[' .. table.concat(kept, ',') .. ']')
return seq
