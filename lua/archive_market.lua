#!lua flags=allow-oom
-- archive_market: drop a settled market from Redis once its final state is in PostgreSQL.
--
-- KEYS[1] market hash, KEYS[2] market positions hash, KEYS[3] markets index <p>:markets,
-- KEYS[4] dirty set <p>:dirty, KEYS[5] archived markets hash <p>:archived,
-- KEYS[6] market net costs <p>:{m:<id>}:cost
-- ARGV[1] market id, ARGV[2] the persister's committed mark
-- Returns 1 if archived, 0 if the market is not SETTLED, still holds positions, has a
-- change the idle flush has not written yet, or its last event is not yet committed.
--
-- The final market hash is kept, as JSON, in the archived hash (never evicted): a SETTLED
-- market no longer changes, so Redis alone still lists it, reads it and keeps its id taken
-- while PostgreSQL is away; unarchive_market puts it back when an operation needs it. Its net
-- costs go (position_state keeps them): nothing changes them once the market is SETTLED, so
-- the archived market lives on without them.

local m = redis.call('HMGET', KEYS[1], 'status', 'last_event')
if m[1] ~= 'SETTLED' then return 0 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
if redis.call('ZSCORE', KEYS[4], ARGV[1]) then return 0 end
if id_less(ARGV[2], m[2] or '0-0') then return 0 end
local flat = redis.call('HGETALL', KEYS[1])
local fields = {}
for i = 1, #flat, 2 do fields[flat[i]] = flat[i + 1] end
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode(fields))
redis.call('DEL', KEYS[1], KEYS[2], KEYS[6])
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
