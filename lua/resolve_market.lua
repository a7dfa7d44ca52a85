#!lua
-- resolve_market: OPEN -> RESOLVED with the winning outcome; trading stops.
--
-- KEYS[1] market hash, KEYS[2] events stream, KEYS[3] dirty set
-- ARGV[1] market id, ARGV[2] outcome ('YES' or 'NO')
-- Returns {updated_ms}. Errors: NOT_FOUND, INVALID_STATE. Emits MarketResolved {market_id, outcome}.

local status = redis.call('HGET', KEYS[1], 'status')
if not status then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if status ~= 'OPEN' then
  return reject('INVALID_STATE', 'market is ' .. status .. ', only an OPEN market can be resolved')
end
local ms = now_ms()
redis.call('HSET', KEYS[1], 'status', 'RESOLVED', 'outcome', ARGV[2])
local event = redis.call('XADD', KEYS[2], '*', 'type', 'MarketResolved', 'ts', ms,
  'market_id', ARGV[1], 'outcome', ARGV[2])
touch_market(KEYS[1], KEYS[3], ARGV[1], ms, event, 1)
return {ms}
