-- spendgate counters: reserve (version 2). One decision, one round trip.
--
-- Version 1's decision and stored reservation, with its numbers packed: version 1 took 15
-- arguments and 8 more per counter (about 60 for six counters), each one encoded by the
-- client and converted here; this one takes 7. A reservation made by either version is
-- settled, charged, renewed and swept by either (the hash and the counters are the same).
--
-- KEYS: 1 reservation hash, 2 lease index (zset), 3 overrides hash, then for counter i:
--       3 + 2i - 1 its hash, 3 + 2i its budget's member set.
-- ARGV: 1 injected now_ms or '', 2 reservation id, 3 owner,
--       4 the numbers, a JSON array of integers: lease length ms, requested ceiling,
--         floor, ceiling the request caps allow, input tokens, input cost, choices,
--         output rate, then 5 per counter: configured limit, flags (1 blocks, 2 clamps,
--         4 * unit: 0 nano-dollars, 1 tokens, 2 requests or concurrency), since_ms (for a
--         rolling window: its length in ms), bucket_ms, rolling bucket width ms (0: not
--         rolling, the window is the one given),
--       5 worst case (JSON, stored), 6 lapse template (JSON, stored),
--       7 counters as stored (JSON list of [budget, member, unit]; the budgets' names
--         are read from it).
--
-- A rolling window (width > 0) is recomputed from the server's clock: bucket =
-- floor(now / width) * width and since = floor((now - length) / width) * width, with the
-- length passed in the since_ms slot. Calendar and lifetime windows come as given (a clock
-- a little off moves only when a calendar window starts, never what one window holds).
--
-- Returns {1, ceiling, amounts..., states...} or {0, blocker index, states...}, or {-1}
-- if the reservation exists; states: limit, spent, reserved, oldest, since, bucket each.
-- (cjson reads integers below 2^53 exactly; the client refuses larger ones.)

local now = clock_ms()
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {-1}
end
local numbers = cjson.decode(ARGV[4])
local lease = numbers[1]
local requested = numbers[2]
local floor_ = numbers[3]
local ceiling = numbers[4]
local input_tokens = numbers[5]
local input_cost = numbers[6]
local choices = numbers[7]
local rate = numbers[8]
local stored = cjson.decode(ARGV[7])
local n = #stored

local function affordable(unit, room)
  if unit == 2 then
    if room >= 1 then return requested end
    return -1
  end
  local fixed = input_cost
  if unit == 1 then fixed = input_tokens end
  if room < fixed then return -1 end
  local spare = room - fixed
  if unit == 1 then return fdiv(spare, choices) end
  if rate == 0 then return requested end
  return mega_div(spare, choices * rate)
end

local function amount(unit, k)
  if unit == 2 then return 1 end
  local output = k * choices
  if unit == 1 then return input_tokens + output end
  return input_cost + token_cost(output, rate)
end

local counters = {}
local states = {}
for i = 1, n do
  local base = 8 + (i - 1) * 5
  local flags = numbers[base + 2]
  local c = {
    budget = stored[i][1],
    blocks = flags % 2 == 1,
    clamps = flags % 4 >= 2,
    unit = fdiv(flags, 4),
    since = numbers[base + 3],
    bucket = numbers[base + 4],
    key = KEYS[3 + 2 * i - 1],
    members = KEYS[3 + 2 * i],
  }
  local width = numbers[base + 5]
  if width > 0 then
    local length = c.since
    c.bucket = fdiv(now, width) * width
    c.since = fdiv(now - length, width) * width
  end
  c.limit = limit_of(KEYS[3], c.budget, numbers[base + 1], now)
  local spent, reserved, oldest = read_counter(c.key, c.since)
  if type(spent) == 'table' then return spent end -- an error reply
  c.room = c.limit - spent - reserved
  counters[i] = c
  local at = #states
  states[at + 1] = c.limit
  states[at + 2] = spent
  states[at + 3] = reserved
  states[at + 4] = oldest
  states[at + 5] = c.since
  states[at + 6] = c.bucket
end

-- domain.admission.decide, counter by counter (the request caps were applied by the
-- caller: ceiling >= floor here).
local function refuse(i)
  local out = {0, i}
  for _, v in ipairs(states) do out[#out + 1] = v end
  return out
end

local blocker = 0
for i, c in ipairs(counters) do
  if c.blocks then
    local allowed = affordable(c.unit, c.room)
    if not c.clamps then
      if allowed < requested then return refuse(i) end
    elseif allowed < ceiling then
      ceiling = allowed
      blocker = i
    end
  end
end
if ceiling < floor_ then
  return refuse(blocker)
end

local amounts = {}
local buckets = {}
local keys = {}
for i, c in ipairs(counters) do
  local a = amount(c.unit, ceiling)
  if a >= EXACT then
    return redis.error_reply('reservation amount beyond the exact integer range (2^53)')
  end
  amounts[i] = a
  buckets[i] = int(c.bucket)
  keys[i] = c.key
  redis.call('HINCRBY', c.key, 's' .. int(c.bucket), 0)
  redis.call('HINCRBY', c.key, 'r' .. int(c.bucket), int(a))
  redis.call('SADD', c.members, c.key)
end
local amount_text = {}
for i, a in ipairs(amounts) do amount_text[i] = int(a) end
local expires = now + lease
redis.call('HSET', KEYS[1],
  'owner', ARGV[3], 'expires', int(expires), 'ceiling', int(ceiling),
  'worst', ARGV[5], 'template', ARGV[6], 'counters', ARGV[7],
  'keys', cjson.encode(keys), 'buckets', table.concat(buckets, ','),
  'amounts', table.concat(amount_text, ','))
redis.call('ZADD', KEYS[2], int(expires), ARGV[2])

local out = {1, ceiling}
for _, a in ipairs(amounts) do out[#out + 1] = a end
for _, v in ipairs(states) do out[#out + 1] = v end
return out
