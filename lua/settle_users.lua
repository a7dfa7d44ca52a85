#!lua
-- settle_users: pay one batch of users of a market resolved PROB or CANCEL; resumable and idempotent.
--
-- KEYS[1] market hash, KEYS[2] market positions, KEYS[3] events stream, KEYS[4] dirty set,
-- KEYS[5] market net costs <p>:{m:<id>}:cost, KEYS[6] refunded users <p>:{m:<id>}:refunded,
-- then per user i (1-based): KEYS[5+2i] user hash, KEYS[6+2i] user positions
-- ARGV[1] market id, ARGV[2] the resolution, 'PROB' or 'CANCEL' (the market's outcome must be it),
-- ARGV[3] what the engine priced the batch from, checked here before anything changes:
--   PROB: the market's probabilities text; CANCEL: the pool at resolution (pool + payouts_total,
--   as nothing but refunds moves the pool of a resolved market)
-- ARGV[4] n, the market's labels ARGV[5..4+n], then
--   PROB: ARGV[5+n..4+2n] each label's probability (micro-units), then one user id per user;
--   CANCEL: per user: user id, refund (micro-units, already scaled: engine/resolutions.py), then
--   the n net costs the engine read for it, label by label ('' where none)
-- Returns {done, missing user ids...}: users settled by this call, and users left alone because
-- their hash is not in Redis (evicted: load them and send them again).
-- Errors: NOT_FOUND, INVALID_STATE (market not RESOLVED, resolved otherwise, or its state not what
-- the engine priced from: nothing changed).
-- Emits, per user paid a non-zero amount: PROB Payout {market_id, user_id, shares (all of its
-- shares of the market), amount, available, pool, outcome 'PROB', outcomes (labels it held, comma-
-- separated)}; CANCEL Refund {market_id, user_id, amount, available, pool, outcomes}.
--
-- Each user's every position in the market is paid and deleted in the same call (one payout per
-- user over all its outcomes), so a user whose positions are gone was settled by an earlier
-- (possibly interrupted) run. A refund goes to users who traded, holding shares or not: those
-- refunded are kept in the refunded set (deleted once SETTLED), so a refund is never paid twice.
-- Shares removed are counted in settled_<label> as settle_batch does. PROB's payout is exact in
-- doubles: each s = hi * 10^6 + lo, sum p_i * hi_i <= max(hi) * 10^6 <= 9e15 and sum p_i * lo_i < 10^12.

local m = redis.call('HMGET', KEYS[1], 'status', 'outcome', 'probabilities', 'pool', 'payouts_total')
if not m[1] then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if m[1] ~= 'RESOLVED' then
  return reject('INVALID_STATE', 'market is ' .. m[1] .. ', only a RESOLVED market can be settled')
end
local mode = ARGV[2]
if m[2] ~= mode then
  return reject('INVALID_STATE', 'market is resolved ' .. tostring(m[2]) .. ', not ' .. mode)
end
if mode == 'PROB' and m[3] ~= ARGV[3] then
  return reject('INVALID_STATE', 'the market\'s probabilities are not those the batch was priced with')
end
if mode == 'CANCEL' and add_int(m[4], m[5] or '0') ~= ARGV[3] then
  return reject('INVALID_STATE', 'the pool at resolution is not the one the refunds were scaled to')
end

local n = tonumber(ARGV[4])
local labels, first = {}, 5 + n
for j = 1, n do labels[j] = ARGV[4 + j] end
local prob = {}
if mode == 'PROB' then
  for j = 1, n do prob[j] = tonumber(ARGV[4 + n + j]) end
  first = 5 + 2 * n
end
local per_user = mode == 'PROB' and 1 or 2 + n

-- CANCEL: every refund checked against the frozen net costs, and the batch against the pool,
-- before anything is written (an error after a write would leave the write in place).
if mode == 'CANCEL' then
  local owed = 0
  for a = first, #ARGV, per_user do
    local user_id = ARGV[a]
    for j = 1, n do
      local cost = redis.call('HGET', KEYS[5], user_id .. ':' .. labels[j]) or ''
      if cost ~= ARGV[a + 1 + j] then
        return reject('INVALID_STATE', 'net cost of ' .. user_id .. ':' .. labels[j] .. ' changed since resolution')
      end
    end
    if redis.call('SISMEMBER', KEYS[6], user_id) == 0 then owed = owed + tonumber(ARGV[a + 1]) end
  end
  if owed > tonumber(m[4]) then
    return reject('INVALID_STATE', 'refunds of ' .. fmt6(owed) .. ' exceed the pool ' .. fmt6(m[4]))
  end
end

local ms = now_ms()
local paid, holders, done = '0', 0, 0
local settled = {}
local missing = {}
local last_event = redis.call('HGET', KEYS[1], 'last_event')
local i = 0
for a = first, #ARGV, per_user do
  i = i + 1
  local user_id = ARGV[a]
  local user_key, user_pos = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local held, held_labels, total = {}, {}, '0'
  for j = 1, n do
    local shares = redis.call('HGET', KEYS[2], user_id .. ':' .. labels[j])
    if shares then
      held[j] = shares
      held_labels[#held_labels + 1] = labels[j]
      total = add_int(total, shares)
    end
  end
  local amount = 0
  local skip = false
  if mode == 'PROB' then
    if #held_labels == 0 then
      skip = true  -- settled by an earlier run (or never held: nothing to pay)
    else
      local big, small = 0, 0
      for j = 1, n do
        if held[j] then
          local s = tonumber(held[j])
          local hi = math.floor(s / 1000000)
          big = big + prob[j] * hi
          small = small + prob[j] * (s - hi * 1000000)
        end
      end
      amount = big + math.floor(small / 1000000)
    end
  else
    skip = redis.call('SISMEMBER', KEYS[6], user_id) == 1
    amount = tonumber(ARGV[a + 1])
    if not skip and amount == 0 and #held_labels == 0 then skip = true end
  end
  if not skip and redis.call('EXISTS', user_key) == 0 then
    -- Evicted (only a user holding nothing is): its balance is in PostgreSQL until it is loaded.
    missing[#missing + 1] = user_id
    skip = true
  end
  if not skip then
    local outcomes = table.concat(held_labels, ',')
    if amount > 0 then
      local amount_str = int_str(amount)
      -- Exact in int64 and read back as a string, as settle_batch credits a payout.
      redis.call('HINCRBY', user_key, 'available', amount_str)
      local available = redis.call('HGET', user_key, 'available')
      local pool = int_str(redis.call('HINCRBY', KEYS[1], 'pool', '-' .. amount_str))
      if mode == 'PROB' then
        last_event = redis.call('XADD', KEYS[3], '*', 'type', 'Payout', 'ts', ms, 'market_id', ARGV[1],
          'user_id', user_id, 'shares', fmt6(total), 'amount', fmt6(amount_str), 'available', fmt6(available),
          'pool', fmt6(pool), 'outcome', 'PROB', 'outcomes', outcomes)
      else
        last_event = redis.call('XADD', KEYS[3], '*', 'type', 'Refund', 'ts', ms, 'market_id', ARGV[1],
          'user_id', user_id, 'amount', fmt6(amount_str), 'available', fmt6(available), 'pool', fmt6(pool),
          'outcomes', outcomes)
        redis.call('SADD', KEYS[6], user_id)
      end
      redis.call('HSET', user_key, 'last_event', last_event)
      paid = add_int(paid, amount_str)  -- exact as a string: a batch's total is not bounded like one payout
      holders = holders + 1
    end
    for j = 1, n do
      if held[j] then
        local field = settled_field(labels[j])
        settled[field] = (settled[field] or 0) + tonumber(held[j])
        redis.call('HDEL', KEYS[2], user_id .. ':' .. labels[j])
        redis.call('HDEL', user_pos, ARGV[1] .. ':' .. labels[j])
      end
    end
    done = done + 1
  end
end
if done > 0 then
  if paid ~= '0' then
    redis.call('HINCRBY', KEYS[1], 'payouts_total', paid)
    redis.call('HINCRBY', KEYS[1], 'holders_paid', holders)
  end
  for field, shares in pairs(settled) do
    redis.call('HINCRBY', KEYS[1], field, int_str(shares))
  end
  touch_market(KEYS[1], KEYS[4], ARGV[1], ms, last_event, 1)
end
local reply = {done}
for _, user_id in ipairs(missing) do reply[#reply + 1] = user_id end
return reply
