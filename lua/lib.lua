-- lib.lua: helpers inserted by engine/scripts.py into every operation script, after its
-- first line: the `#!lua` flags line, which Redis reads only as line 1.
--
-- Flags (Redis 7): a script with a `#!lua` line may touch only the keys it receives in KEYS
-- (the contract; Redis checks it in cluster mode) and key names are spelled only in
-- engine/keys.py (tests/test_lua_keys.py greps for spellings here). Plain `#!lua`: the
-- script writes, and Redis at maxmemory refuses it whole before it runs rather than failing
-- at its first write half-way. `flags=allow-oom` only on scripts that free memory or
-- overwrite a fixed-size value (evict_user, archive_market, trim_events, clear_dirty, forget_unchanged,
-- publish_committed): the janitor must still relieve a full Redis, and durable waits still
-- see commits. No script is read-only (no-writes) and none may cross slots
-- (allow-cross-slot-keys): a trade's stream, market and user keys share no slot, so a
-- Redis Cluster would refuse it with CROSSSLOT; a cluster needs another key layout, and
-- the scripts declaring every key is what lets that change stay in engine/keys.py.
--
-- Units: every amount is an integer of micro-units. Redis Lua numbers are
-- doubles, exact below 2^53. Positions, pools and outstanding totals stay at
-- or below 9e15 (the contract's bound), so plain numbers are exact for them.
-- Balances are not bounded: money owed (proceeds, payouts, the house's return)
-- is credited past 9e15 and must stay exact up to 2^63 - 1, so balance
-- arithmetic goes through the *_int helpers below (exact on decimal strings)
-- or HINCRBY (int64 in Redis) followed by HGET, never through a double: an
-- integer reply reaches Lua as a double, so HINCRBY's own reply is exact only
-- where the value is bounded. Values are written back as strings built here or
-- received from Python, never with tostring() (which prints 1e+15) and never
-- as -x of a number that may be zero (which gives "-0", refused by HINCRBY).

local MAX_TOTAL = 9000000000000000
local MAX_TOTAL_STR = '9000000000000000'
-- Largest value Redis's HINCRBY can hold; every balance stays at or below it
-- because deposits.lua keeps the ledger's total deposits there (see deposit.lua).
local MAX_EXACT_STR = '9223372036854775807'

-- A canonical non-negative integer string (no sign, no leading zeros; up to
-- 24 digits) as two exact doubles: the digits above the last nine, and those nine.
local function split9(s)
  local n = #s
  if n <= 9 then return 0, tonumber(s) end
  return tonumber(string.sub(s, 1, n - 9)), tonumber(string.sub(s, n - 8))
end

local function join9(hi, lo)
  if hi == 0 then return string.format('%d', lo) end
  return string.format('%d%09d', hi, lo)
end

-- Both below 1e15 (at most 15 digits, as nearly every balance and cost is): plain
-- doubles are exact for them and their sum, and cost less than splitting.
local function both_short(a, b)
  return #a <= 15 and #b <= 15
end

-- a + b, exactly, for canonical non-negative integer strings.
local function add_int(a, b)
  if both_short(a, b) then return string.format('%d', tonumber(a) + tonumber(b)) end
  local ah, al = split9(a)
  local bh, bl = split9(b)
  local hi, lo = ah + bh, al + bl
  if lo >= 1000000000 then hi, lo = hi + 1, lo - 1000000000 end
  return join9(hi, lo)
end

-- a - b, exactly, for canonical non-negative integer strings with a >= b.
local function sub_int(a, b)
  if both_short(a, b) then return string.format('%d', tonumber(a) - tonumber(b)) end
  local ah, al = split9(a)
  local bh, bl = split9(b)
  local hi, lo = ah - bh, al - bl
  if lo < 0 then hi, lo = hi - 1, lo + 1000000000 end
  return join9(hi, lo)
end

-- a < b, exactly, for canonical non-negative integer strings (numeric parts
-- rather than a string comparison, which Lua leaves to the C locale).
local function lt_int(a, b)
  if #a ~= #b then return #a < #b end
  if #a <= 15 then return tonumber(a) < tonumber(b) end
  local ah, al = split9(a)
  local bh, bl = split9(b)
  return ah < bh or (ah == bh and al < bl)
end

-- A non-negative or negative integer (number or digit string) as a string.
local function int_str(v)
  if type(v) == 'string' then return v end
  return string.format('%d', v)
end

-- Micro-units as a decimal string with exactly 6 decimals: 12500000 -> "12.500000". `v` is a
-- number (exact: below 2^53) or a canonical integer string (any length: balances). This runs
-- about eight times per trade, so each form takes its cheapest exact path: one format for a
-- number (math.fmod is exact on doubles, where Lua's % divides and can round), slicing for a string.
local function fmt6(v)
  if type(v) == 'number' then
    if v < 0 then return '-' .. fmt6(-v) end
    local micro = math.fmod(v, 1000000)
    return string.format('%d.%06d', (v - micro) / 1000000, micro)
  end
  local sign = ''
  if string.byte(v, 1) == 45 then  -- '-'
    sign, v = '-', string.sub(v, 2)
  end
  local n = #v
  if n > 6 then return sign .. string.sub(v, 1, n - 6) .. '.' .. string.sub(v, n - 5) end
  return sign .. '0.' .. string.rep('0', 6 - n) .. v
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

-- Positions and net costs hashes hold a field per position (a market's one per holder and label, a
-- user's one per market and label) and the dirty set a member per market traded since the last
-- flush. Redis keeps small hashes and sorted sets as listpacks, searched by a linear scan: with its
-- default limits (512 fields for a hash, 128 members for a sorted set) a market of a few hundred
-- holdings scanned about a hundred fields per lookup, several lookups an order (in the bench's
-- 100-user market, ~20 % of the trade script's instructions). Past LISTPACK_MOST entries such a key
-- is turned into a hash table or skip list: one field or member too long for a listpack, added and
-- removed at once. Redis never turns the key back while it lives (a restart loads it as a listpack
-- again, and the next new entry turns it back). No reader sees the long entry: the key's contents
-- are unchanged.
local LISTPACK_MOST = 64
-- 65 characters, longer than the listpack value limits' default 64 (a literal: this runs on every call)
local LISTPACK_BREAKER = '~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~'

local function to_hashtable(key)
  if redis.call('OBJECT', 'ENCODING', key) ~= 'listpack' then return end
  redis.call('HSET', key, LISTPACK_BREAKER, '')
  redis.call('HDEL', key, LISTPACK_BREAKER)
end

-- A positions hash and its net costs hash (a market's, or a user's), as a holding starts. Net costs
-- are never dropped (positions are, at zero), so the costs hash is the larger: only its size is read,
-- one command where a hash is small, and past LISTPACK_MOST both are turned.
local function keep_hashed(pos, costs)
  if redis.call('HLEN', costs) < LISTPACK_MOST then return end
  to_hashtable(costs)
  to_hashtable(pos)
end

-- keep_hashed's size check is a command per new holding, and where most trades start a holding (the
-- bench's 100 markets) that was ~6,600 of a trade's ~350,000 script instructions. So only the new
-- holdings of every HOLDING_CHECK_EVERY-th trade check: a hash past LISTPACK_MOST is turned a few
-- holdings later. (A pattern of trades that kept missing the check would leave a listpack: slower,
-- never wrong.)
local HOLDING_CHECK_EVERY = 8

-- A market's own hash (about 17 fields) is read and written on every batch of its orders, seven
-- fields each way. As a listpack each read is a scan and each write moves the listpack's tail
-- (realloc and memmove): over 100 markets (about one order a batch) that was ~16,000 instructions a
-- trade. So it is a hash table from its creation (create_market.lua): 368 -> 1,148 bytes a market. A
-- restart loads it as a listpack again; trade.lua turns it back as its version passes a multiple of
-- MARKET_RECHECK (an OBJECT ENCODING on every batch would cost a third of what the table saves).
local MARKET_RECHECK = 128

local function keep_sorted(key)
  if redis.call('ZCARD', key) < LISTPACK_MOST then return end
  if redis.call('OBJECT', 'ENCODING', key) ~= 'listpack' then return end
  redis.call('ZADD', key, 0, LISTPACK_BREAKER)
  redis.call('ZREM', key, LISTPACK_BREAKER)
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
  if redis.call('ZADD', dirty, ms, market_id) == 1 then keep_sorted(dirty) end
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

-- Close an OPEN market now (its close time reached, or the admin asked): status CLOSED and one
-- MarketClosed event naming the last trade before the close, so the record and any replay agree
-- on where trading stopped. `reason` is 'close_time' or 'admin'. Returns the event id.
local function close_market_now(mkey, events, dirty, market_id, ms, reason)
  local last_trade = redis.call('HGET', mkey, 'last_trade_id') or '0'
  redis.call('HSET', mkey, 'status', 'CLOSED', 'closed_ms', ms)
  local event = redis.call('XADD', events, '*', 'type', 'MarketClosed', 'ts', ms, 'market_id', market_id,
    'last_trade_id', last_trade, 'reason', reason)
  touch_market(mkey, dirty, market_id, ms, event, 1)
  return event
end

-- Whether an OPEN market's close time (the hash's close_ms, '' or absent when none) has come at `ms`.
-- (HMGET's missing field reaches Lua as false.)
local function close_due(close_ms, ms)
  if not close_ms or close_ms == '' then return false end
  return tonumber(ms) >= tonumber(close_ms)
end

-- A market's outcome labels and where their numbers live in its hash: engine/labels.py's rule, the
-- same here. A YES/NO market names no labels ('outcomes' absent: HMGET gives false) and keeps
-- q_yes / q_no, settled_yes / settled_no; any other market lists its labels comma-joined and keeps
-- label L's in q:L and settled:L (YES and NO always in the YES/NO fields).
local YES_NO = {'YES', 'NO'}

local function labels_from(text)
  if not text or text == '' then return YES_NO end
  local out = {}
  for label in string.gmatch(text, '[^,]+') do out[#out + 1] = label end
  return out
end

local function q_field(label)
  if label == 'YES' then return 'q_yes' end
  if label == 'NO' then return 'q_no' end
  return 'q:' .. label
end

local function settled_field(label)
  if label == 'YES' then return 'settled_yes' end
  if label == 'NO' then return 'settled_no' end
  return 'settled:' .. label
end

-- JSON text {"<label>":"<value>",...} in label order, as engine/labels.py's decimal_map writes it
-- (labels are [A-Za-z0-9_-], values decimal strings: nothing to escape).
local function decimal_json(labels, values)
  local parts = {}
  for i, label in ipairs(labels) do parts[i] = '"' .. label .. '":"' .. values[i] .. '"' end
  return '{' .. table.concat(parts, ',') .. '}'
end

-- One step of a transfer between sub-wallets (lua/transfer_out.lua, lua/transfer_in.lua), `step`
-- 'out' or 'in': the sub-wallet's new balance and its moved_out / moved_in (what it ever sent or
-- received by transfers: engine/sharded.py reads them so that an account read over shards never
-- counts a transfer twice), the transfer's record "<step>|<user>|<from>|<to>|<amount>|<ms>", the
-- shard's transfers_out / transfers_in total, and the TransferOut / TransferIn event. `args` is the
-- scripts' ARGV: transfer id, user id, source shard, destination shard, amount. Returns the event id.
local function record_transfer_step(step, wallet, record, totals, events, args, after, ms)
  redis.call('HSET', wallet, 'available', after)
  redis.call('HINCRBY', wallet, 'moved_' .. step, args[5])
  redis.call('SET', record, table.concat({step, args[2], args[3], args[4], args[5], ms}, '|'))
  redis.call('HINCRBY', totals, 'transfers_' .. step, args[5])
  local event = redis.call('XADD', events, '*', 'type', step == 'out' and 'TransferOut' or 'TransferIn',
    'ts', ms, 'transfer_id', args[1], 'user_id', args[2], 'from_shard', args[3], 'to_shard', args[4],
    'amount', fmt6(args[5]), 'available', fmt6(after))
  redis.call('HSET', wallet, 'last_event', event)
  return event
end
