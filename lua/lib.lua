-- lib.lua: helpers prepended to every operation script by engine/scripts.py.
--
-- Units: every amount is an integer of micro-units. Redis Lua numbers are
-- doubles, exact below 2^53; the contract keeps every total below 9e15, so
-- comparisons are exact. Values are written back as strings built here or
-- received from Python, never with tostring() (which prints 1e+15) and never
-- as -x of a number that may be zero (which gives "-0", refused by HINCRBY).

local MAX_TOTAL = 9000000000000000

-- A non-negative or negative integer (number or digit string) as a string.
local function int_str(v)
  if type(v) == 'string' then return v end
  return string.format('%d', v)
end

-- Micro-units as a decimal string with exactly 6 decimals: 12500000 -> "12.500000".
local function fmt6(v)
  local s = int_str(v)
  local sign = ''
  if string.sub(s, 1, 1) == '-' then
    sign = '-'
    s = string.sub(s, 2)
  end
  if #s < 7 then s = string.rep('0', 7 - #s) .. s end
  return sign .. string.sub(s, 1, #s - 6) .. '.' .. string.sub(s, -6)
end

-- Server time in milliseconds, as an integer string.
local function now_ms()
  local t = redis.call('TIME')
  return string.format('%d', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
end

-- Set a hash field to an integer string, dropping the field at zero so
-- position hashes hold only non-zero holdings.
local function set_or_drop(key, field, value)
  if value == '0' then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, value)
  end
end

local function reject(code, message)
  return redis.error_reply(code .. ' ' .. message)
end

-- Record a change of a market: bump its version by `bump`, note when and by
-- which stream entry (the persister's idle flush snapshots a market only once
-- that entry is committed to PostgreSQL), and mark it dirty for that flush.
local function touch_market(mkey, dirty, market_id, ms, event_id, bump)
  local version = redis.call('HINCRBY', mkey, 'version', bump)
  redis.call('HSET', mkey, 'updated_ms', ms, 'last_event', event_id)
  redis.call('ZADD', dirty, ms, market_id)
  return version
end

-- Stream ids "ms-seq" as two numbers, for ordering.
local function parse_id(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end

local function id_less(a, b)
  local am, as = parse_id(a)
  local bm, bs = parse_id(b)
  return am < bm or (am == bm and as < bs)
end
