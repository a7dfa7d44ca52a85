#!lua
-- open_market: CREATED -> OPEN; trading starts (until the close time, if the market has one).
--
-- KEYS[1] market hash, KEYS[2] events stream, KEYS[3] dirty set, KEYS[4] closing index <p>:closing
-- ARGV[1] market id
-- Returns {updated_ms}. Errors: NOT_FOUND, INVALID_STATE. Emits MarketOpened {market_id}, then
-- MarketClosed too if the close time has already passed (opened late: it opens closed, and can be
-- resolved like any CLOSED market, rather than stay CREATED with its subsidy held for ever).

local m = redis.call('HMGET', KEYS[1], 'status', 'close_ms')
local status = m[1]
if not status then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if status ~= 'CREATED' then
  return reject('INVALID_STATE', 'market is ' .. status .. ', only a CREATED market can be opened')
end
local ms = now_ms()
redis.call('HSET', KEYS[1], 'status', 'OPEN')
local event = redis.call('XADD', KEYS[2], '*', 'type', 'MarketOpened', 'ts', ms, 'market_id', ARGV[1])
touch_market(KEYS[1], KEYS[3], ARGV[1], ms, event, 1)
if close_due(m[2], ms) then
  close_market_now(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ms, 'close_time')
elseif m[2] and m[2] ~= '' then
  redis.call('ZADD', KEYS[4], m[2], ARGV[1])
end
return {ms}
