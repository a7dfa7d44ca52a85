#!lua
-- close_market: OPEN -> CLOSED, on the admin's request or once the market's close time has come.
--
-- KEYS[1] market hash, KEYS[2] events stream, KEYS[3] dirty set, KEYS[4] closing index <p>:closing
-- ARGV[1] market id, ARGV[2] 'admin' (close now) or 'due' (close only if the close time has come:
--   Redis' clock decides, the same clock trade.lua reads, so no trade runs after the close time)
-- Returns {status, updated_ms}: the status after the call and when the market last changed.
-- Errors: NOT_FOUND; INVALID_STATE ('admin' on a market that is not OPEN).
-- Emits MarketClosed {market_id, last_trade_id, reason} when it closes the market.
--
-- 'due' is what the janitor and readers send: any number of them may race; the first closes, the
-- others find the market CLOSED. The closing index lists OPEN markets with a close time: a market
-- no longer OPEN leaves it here.

local m = redis.call('HMGET', KEYS[1], 'status', 'close_ms', 'updated_ms')
if not m[1] then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return reject('NOT_FOUND', 'no market ' .. ARGV[1])
end
local ms = now_ms()
if m[1] == 'OPEN' and (ARGV[2] == 'admin' or close_due(m[2], ms)) then
  close_market_now(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ms, ARGV[2] == 'admin' and 'admin' or 'close_time')
  redis.call('ZREM', KEYS[4], ARGV[1])
  return {'CLOSED', ms}
end
if ARGV[2] == 'admin' then
  return reject('INVALID_STATE', 'market is ' .. m[1] .. ', only an OPEN market can be closed')
end
if m[1] ~= 'OPEN' then redis.call('ZREM', KEYS[4], ARGV[1]) end
return {m[1], m[3]}
