#!lua
-- settle_batch: pay one batch of a RESOLVED market's holders; resumable and idempotent.
--
-- KEYS[1] market hash, KEYS[2] market positions <p>:{m:<id>}:pos, KEYS[3] events stream,
-- KEYS[4] dirty set, then per position field i: KEYS[3+2i] user hash, KEYS[4+2i] user positions
-- ARGV[1] market id, ARGV[1+i] position field "<user>:<label>" (as read by HSCAN)
-- Returns {fields_settled}.
-- Errors: NOT_FOUND, INVALID_STATE (market not RESOLVED, or resolved PROB or CANCEL).
-- Emits Payout {market_id, user_id, shares, amount} (+ available, pool after, outcome) per winning holder.
--
-- Each field is paid and deleted in the same call, so a field already gone was
-- settled by an earlier (possibly interrupted) run and is skipped: nobody is
-- paid twice. Shares removed are counted per label (settled_yes / settled_no, settled:<label>:
-- lib.lua's settled_field) so that q - settled always equals the positions still held.

local m = redis.call('HMGET', KEYS[1], 'status', 'outcome')
if not m[1] then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if m[1] ~= 'RESOLVED' then
  return reject('INVALID_STATE', 'market is ' .. m[1] .. ', only a RESOLVED market can be settled')
end
local winner = m[2]
if winner == 'PROB' or winner == 'CANCEL' then
  -- Paid per user over all its outcomes, not per position: settle_users.lua.
  return reject('INVALID_STATE', 'market is resolved ' .. winner .. ', settled by settle_users')
end
local ms = now_ms()
local paid, holders, done = 0, 0, 0
local settled = {}
local last_event = redis.call('HGET', KEYS[1], 'last_event')
for i = 2, #ARGV do
  local field = ARGV[i]
  local shares = redis.call('HGET', KEYS[2], field)
  if shares then
    local user_key, user_pos = KEYS[3 + 2 * (i - 1)], KEYS[4 + 2 * (i - 1)]
    local sep = string.find(field, ':[^:]*$')
    local user_id, outcome = string.sub(field, 1, sep - 1), string.sub(field, sep + 1)
    local n = tonumber(shares)
    if outcome == winner and n > 0 then
      -- HINCRBY is exact in int64 (and cannot overflow: see deposit.lua); its reply reaches
      -- Lua as a double, so the balance past 2^53 is read back as a string.
      redis.call('HINCRBY', user_key, 'available', shares)
      local available = redis.call('HGET', user_key, 'available')
      local pool = int_str(redis.call('HINCRBY', KEYS[1], 'pool', '-' .. shares))
      last_event = redis.call('XADD', KEYS[3], '*', 'type', 'Payout', 'ts', ms, 'market_id', ARGV[1],
        'user_id', user_id, 'shares', fmt6(shares), 'amount', fmt6(shares), 'available', fmt6(available),
        'pool', fmt6(pool), 'outcome', outcome)
      redis.call('HSET', user_key, 'last_event', last_event)
      paid = paid + n
      holders = holders + 1
    end
    local sf = settled_field(outcome)
    settled[sf] = (settled[sf] or 0) + n
    redis.call('HDEL', KEYS[2], field)
    redis.call('HDEL', user_pos, ARGV[1] .. ':' .. outcome)
    done = done + 1
  end
end
if done > 0 then
  if paid > 0 then
    redis.call('HINCRBY', KEYS[1], 'payouts_total', int_str(paid))
    redis.call('HINCRBY', KEYS[1], 'holders_paid', holders)
  end
  for field, shares in pairs(settled) do
    redis.call('HINCRBY', KEYS[1], field, int_str(shares))
  end
  touch_market(KEYS[1], KEYS[4], ARGV[1], ms, last_event, 1)
end
return {done}
