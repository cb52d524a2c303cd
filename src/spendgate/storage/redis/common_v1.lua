-- spendgate counters, shared prelude (prepended to every script before SCRIPT LOAD).
--
-- Numbers in Lua are doubles: every integer below 2^53 is exact, and so is every sum,
-- difference and product that stays below it. The Python side refuses plans and limits
-- that could leave that range (spendgate.storage.redis.bounds), and the helpers below
-- never form an intermediate value at or above 2^53.
--
-- A counter is one hash per (budget, member, unit): field "s<bucket_ms>" holds what was
-- spent in the bucket, "r<bucket_ms>" what is reserved there (both always present).

local EXACT = 9007199254740992 -- 2^53

local function int(x)
  return string.format('%d', x)
end

-- Now in milliseconds: the injected time of a test (ARGV[1] not empty), else the Redis
-- server's clock, so that every replica reads the same time.
local function clock_ms()
  if ARGV[1] ~= '' then
    return tonumber(ARGV[1])
  end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- floor(a / b) exactly, for integers 0 <= a < 2^53 and 0 < b < 2^53: fmod is exact in
-- IEEE arithmetic, so a - r is an exact multiple of b and the division is exact too.
local function fdiv(a, b)
  local r = math.fmod(a, b)
  return (a - r) / b
end

-- floor(a * 10^6 / d) exactly, by long division one decimal digit at a time (needs
-- 10 * d < 2^53); saturates at 2^53 (callers only compare it with values below that).
local function mega_div(a, d)
  local q = fdiv(a, d)
  if q >= EXACT / 1000000 then
    return EXACT
  end
  local r = a - q * d
  local frac = 0
  for _ = 1, 6 do
    r = r * 10
    local digit = fdiv(r, d)
    frac = frac * 10 + digit
    r = r - digit * d
  end
  return q * 1000000 + frac
end

-- ceil(tokens * rate / 10^6) exactly (spendgate.money.token_cost), for tokens below
-- 2^53 / 10^6 and a result below 2^53.
local function token_cost(tokens, rate)
  if tokens <= 0 or rate == 0 then
    return 0
  end
  local low = math.fmod(rate, 1000000)
  local high = (rate - low) / 1000000
  local part = tokens * low -- below 2^53 / 10^6 * 10^6
  local r = math.fmod(part, 1000000)
  local up = (part - r) / 1000000
  if r > 0 then
    up = up + 1
  end
  return tokens * high + up
end

-- The effective limit of a budget at now_ms: the latest override in force, else the
-- configured one. Overrides of a budget: a JSON list of [created_ms, seq, limit, expires_ms
-- or -1] in the hash KEYS-named by the caller.
local function limit_of(overrides_key, budget, configured, now_ms)
  local raw = redis.call('HGET', overrides_key, budget)
  if not raw then
    return configured
  end
  local best = nil
  for _, o in ipairs(cjson.decode(raw)) do
    if o[4] < 0 or o[4] > now_ms then
      if best == nil or o[1] > best[1] or (o[1] == best[1] and o[2] > best[2]) then
        best = o
      end
    end
  end
  if best == nil then
    return configured
  end
  return best[3]
end

-- spent, reserved and the oldest bucket in use of a counter from since_ms on.
local function read_counter(key, since_ms)
  local fields = redis.call('HGETALL', key)
  local spent, reserved, oldest = 0, 0, -1
  local used = {}
  for i = 1, #fields, 2 do
    local name = fields[i]
    local bucket = tonumber(string.sub(name, 2))
    if bucket >= since_ms then
      local value = tonumber(fields[i + 1])
      if string.sub(name, 1, 1) == 's' then
        spent = spent + value
      else
        reserved = reserved + value
      end
      if value ~= 0 then
        used[bucket] = true
      end
    end
  end
  for bucket in pairs(used) do
    if oldest < 0 or bucket < oldest then
      oldest = bucket
    end
  end
  if spent + reserved >= EXACT or spent + reserved <= -EXACT then
    return redis.error_reply('counter ' .. key .. ' is beyond the exact integer range (2^53)')
  end
  return spent, reserved, oldest
end
