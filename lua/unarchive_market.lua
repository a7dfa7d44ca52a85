#!lua
-- unarchive_market: put an archived market back into Redis from its kept final state.
--
-- KEYS[1] market hash <p>:{m:<id>}, KEYS[2] markets index <p>:markets,
-- KEYS[3] archived markets hash <p>:archived
-- ARGV[1] market id
-- Returns 1 if the market is resident now (put back, or already there), 0 if it is
-- neither resident nor archived (no such market).
--
-- Written by archive_market, the JSON holds every field of the market hash as a string,
-- so the market comes back exactly as it left. Nothing is read from PostgreSQL.

if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end
local kept = redis.call('HGET', KEYS[3], ARGV[1])
if not kept then return 0 end
local fields = cjson.decode(kept)
local flat = {}
for name, value in pairs(fields) do
  flat[#flat + 1] = name
  flat[#flat + 1] = value
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('ZADD', KEYS[2], fields['created_ms'], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
return 1
