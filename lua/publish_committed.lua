#!lua flags=allow-oom
-- publish_committed: advance the persister's committed high-water mark, never move it back.
--
-- KEYS[1] committed mark <p>:persister:committed (also the PUBLISH channel)
-- ARGV[1] stream id: every entry up to and including it is committed to PostgreSQL
-- Returns 1 if the mark advanced (and was published), 0 otherwise.

local current = redis.call('GET', KEYS[1])
if current and not id_less(current, ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
