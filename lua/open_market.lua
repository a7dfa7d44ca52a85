#!lua
-- open_market: CREATED -> OPEN; trading starts.
--
-- KEYS[1] market hash, KEYS[2] events stream, KEYS[3] dirty set
-- ARGV[1] market id
-- Returns {updated_ms}. Errors: NOT_FOUND, INVALID_STATE. Emits MarketOpened {market_id}.

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if status ~= 'CREATED' then
  return reject('INVALID_STATE', 'market is ' .. status .. ', only a CREATED market can be opened')
end
local ms = now_ms()
redis.call('HSET', KEYS[1], 'status', 'OPEN')
local event = redis.call('XADD', KEYS[2], '*', 'type', 'MarketOpened', 'ts', ms, 'market_id', ARGV[1])
touch_market(KEYS[1], KEYS[3], ARGV[1], ms, event, 1)
return {ms}
