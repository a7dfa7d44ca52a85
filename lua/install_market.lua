#!lua
-- install_market: put an archived (settled) market loaded from PostgreSQL back into Redis,
-- only if it is absent.
--
-- KEYS[1] market hash, KEYS[2] markets index <p>:markets
-- ARGV[1] market id, ARGV[2] created_ms, then field/value pairs of the market hash (as
-- record/loader.market_fields builds them: a market of other labels than YES/NO brings its
-- 'outcomes' and each label's q/settled fields, engine/labels.py's layout)
-- Returns 1 if installed, 0 if the market was already there.

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
