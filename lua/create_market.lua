#!lua
-- create_market: register a market (CREATED) and move its subsidy from house to its pool.
--
-- KEYS[1] market hash <p>:{m:<id>}, KEYS[2] markets index <p>:markets,
-- KEYS[3] house user hash <p>:u:house, KEYS[4] events stream, KEYS[5] dirty set <p>:dirty,
-- KEYS[6] archived markets hash <p>:archived (a market is resident or archived: both are taken)
-- ARGV[1] market id, ARGV[2] name, ARGV[3] b (micro-units), ARGV[4] subsidy ceil(b ln n) (micro-units),
-- ARGV[5] close time (ms since the epoch; '' for none): must lie ahead of Redis' clock,
-- ARGV[6] the labels comma-joined ('' or absent for a YES/NO market: engine/labels.py's layout)
-- Returns {created_ms, house_available}.
-- Errors: ALREADY_EXISTS, VALIDATION_ERROR (close time not in the future), INSUFFICIENT_FUNDS (house
-- cannot pay the subsidy).
-- Emits MarketCreated {market_id, name, liquidity_b, pool} (+ available: house's balance after,
-- close_ms when the market has a close time, and outcomes, a JSON list of the labels, for a market
-- other than YES/NO).

if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[6], ARGV[1]) == 1 then
  return reject('ALREADY_EXISTS', 'market_id ' .. ARGV[1] .. ' is taken')
end
local ms = now_ms()
local close_ms = ARGV[5] or ''
-- Redis' clock decides, here as when closing: a close time it has already passed is refused
-- (a request's own defect, so before the house's funds are looked at).
if close_ms ~= '' and tonumber(close_ms) <= tonumber(ms) then
  return reject('VALIDATION_ERROR', 'close_time must lie in the future')
end
local house = redis.call('HGET', KEYS[3], 'available')
-- The house's balance grows by every market's return, past 2^53: exact string arithmetic.
if not house or lt_int(house, ARGV[4]) then
  return reject('INSUFFICIENT_FUNDS', 'house cannot pay the subsidy ' .. fmt6(ARGV[4]))
end
local after = sub_int(house, ARGV[4])
redis.call('HSET', KEYS[3], 'available', after)
local labels_text = ARGV[6] or ''
redis.call('HSET', KEYS[1], 'name', ARGV[2], 'status', 'CREATED', 'outcome', '',
  'b', ARGV[3], 'pool', ARGV[4], 'version', '0',
  'created_ms', ms, 'updated_ms', ms,
  'payouts_total', '0', 'holders_paid', '0', 'close_ms', close_ms)
local labels = labels_from(labels_text)
if labels_text ~= '' then redis.call('HSET', KEYS[1], 'outcomes', labels_text) end
for _, label in ipairs(labels) do
  redis.call('HSET', KEYS[1], q_field(label), '0', settled_field(label), '0')
end
-- Read and written on every batch of its orders: a hash table, not a listpack (lib.lua's MARKET_RECHECK).
to_hashtable(KEYS[1])
redis.call('ZADD', KEYS[2], ms, ARGV[1])
local fields = {'type', 'MarketCreated', 'ts', ms,
  'market_id', ARGV[1], 'name', ARGV[2], 'liquidity_b', fmt6(ARGV[3]), 'pool', fmt6(ARGV[4]),
  'available', fmt6(after)}
if close_ms ~= '' then
  fields[#fields + 1] = 'close_ms'
  fields[#fields + 1] = close_ms
end
if labels_text ~= '' then
  fields[#fields + 1] = 'outcomes'
  fields[#fields + 1] = '["' .. table.concat(labels, '","') .. '"]'
end
local event = redis.call('XADD', KEYS[4], '*', unpack(fields))
touch_market(KEYS[1], KEYS[5], ARGV[1], ms, event, 1)
return {ms, after}
