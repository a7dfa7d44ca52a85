#!lua
-- resolve_market: OPEN or CLOSED -> RESOLVED; trading stops.
--
-- KEYS[1] market hash, KEYS[2] events stream, KEYS[3] dirty set
-- ARGV[1] market id, ARGV[2] outcome: the winning label, 'PROB' or 'CANCEL' (engine/resolutions.py,
-- checked against the market's labels there), ARGV[3] PROB's probabilities as JSON text ('' otherwise)
-- Returns {updated_ms}. Errors: NOT_FOUND, INVALID_STATE.
-- Emits MarketResolved {market_id, outcome} (+ probabilities for PROB), after a MarketClosed if the
-- market was OPEN past its close time.
--
-- From here the market's positions and net costs no longer change (trade.lua executes only on an
-- OPEN market): settlement reads them as they are now, and a run interrupted and run again reads
-- the same.

local m = redis.call('HMGET', KEYS[1], 'status', 'close_ms')
local status = m[1]
if not status then return reject('NOT_FOUND', 'no market ' .. ARGV[1]) end
if status ~= 'OPEN' and status ~= 'CLOSED' then
  return reject('INVALID_STATE', 'market is ' .. status .. ', only an OPEN or CLOSED market can be resolved')
end
local ms = now_ms()
-- An OPEN market past its close time closed then, whether or not anyone noticed: its MarketClosed
-- comes first, as it would have from a trade, the closer or a reader (the closer drops it from
-- the closing index when it next looks).
if status == 'OPEN' and close_due(m[2], ms) then
  close_market_now(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ms, 'close_time')
end
local fields = {'type', 'MarketResolved', 'ts', ms, 'market_id', ARGV[1], 'outcome', ARGV[2]}
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'status', 'RESOLVED', 'outcome', ARGV[2], 'probabilities', ARGV[3])
  fields[#fields + 1] = 'probabilities'
  fields[#fields + 1] = ARGV[3]
else
  redis.call('HSET', KEYS[1], 'status', 'RESOLVED', 'outcome', ARGV[2])
end
local event = redis.call('XADD', KEYS[2], '*', unpack(fields))
touch_market(KEYS[1], KEYS[3], ARGV[1], ms, event, 1)
return {ms}
