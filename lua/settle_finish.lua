#!lua
-- settle_finish: RESOLVED -> SETTLED once every position is paid; the rest of the pool goes to house.
--
-- KEYS[1] market hash, KEYS[2] market positions, KEYS[3] house user hash,
-- KEYS[4] events stream, KEYS[5] dirty set, KEYS[6] the market's refunded users (CANCEL's
-- bookkeeping, settle_users.lua: no longer needed once SETTLED)
-- ARGV[1] market id
-- Returns {'MORE'} while positions remain (run settle_batch again), else
-- {'SETTLED', payouts_total, holders_paid, house_return}.
-- Errors: NOT_FOUND, INVALID_STATE.
-- Emits MarketSettled {market_id, payouts_total, house_return} (+ available: house's balance after).

local m = redis.call('HMGET', KEYS[1], 'status', 'pool', 'payouts_total', 'holders_paid')
if not m[1] then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if m[1] ~= 'RESOLVED' then
  return reject('INVALID_STATE', 'market is ' .. m[1] .. ', only a RESOLVED market can be settled')
end
if redis.call('HLEN', KEYS[2]) > 0 then return {'MORE'} end
local ms = now_ms()
local rest = m[2]
-- Exact in int64 whatever the house holds; read back as a string (see settle_batch.lua).
if tonumber(rest) > 0 then redis.call('HINCRBY', KEYS[3], 'available', rest) end
local house = redis.call('HGET', KEYS[3], 'available')
redis.call('HSET', KEYS[1], 'status', 'SETTLED', 'pool', '0')
redis.call('DEL', KEYS[6])
local event = redis.call('XADD', KEYS[4], '*', 'type', 'MarketSettled', 'ts', ms, 'market_id', ARGV[1],
  'payouts_total', fmt6(m[3]), 'house_return', fmt6(rest), 'available', fmt6(house))
touch_market(KEYS[1], KEYS[5], ARGV[1], ms, event, 1)
return {'SETTLED', m[3], m[4], rest}
