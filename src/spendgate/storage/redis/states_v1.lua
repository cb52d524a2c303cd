-- spendgate counters: the state of counters (version 1), read as reserve_v1 reads them.
--
-- KEYS: 1 overrides hash, then one hash per counter.
-- ARGV: 1 injected now_ms or '', 2 counter count n, then 4 per counter: budget,
--       configured limit, since_ms (the rolling length if width > 0), rolling width ms.
-- Returns limit, spent, reserved, oldest, since, bucket per counter.

local now = clock_ms()
local out = {}
for i = 1, tonumber(ARGV[2]) do
  local base = 2 + (i - 1) * 4
  local since = tonumber(ARGV[base + 3])
  local width = tonumber(ARGV[base + 4])
  local bucket = -1
  if width > 0 then
    bucket = fdiv(now, width) * width
    since = fdiv(now - since, width) * width
  end
  local limit = limit_of(KEYS[1], ARGV[base + 1], tonumber(ARGV[base + 2]), now)
  local spent, reserved, oldest = read_counter(KEYS[1 + i], since)
  if type(spent) == 'table' then return spent end
  for _, v in ipairs({limit, spent, reserved, oldest, since, bucket}) do out[#out + 1] = v end
end
return out
