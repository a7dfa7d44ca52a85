#!lua flags=allow-oom
-- shard_lease: a persister's hold on one shard's stream (persister/leases.py), so that persisters
-- share the shards rather than each working every one: take the lease when it is free, renew it
-- when the caller holds it, or give it back.
--
-- KEYS[1] the shard's lease <s>:persister:lease
-- ARGV[1] the persister's consumer name, ARGV[2] 'hold' (take or renew) or 'release',
--   ARGV[3] how long a hold lasts without renewal (ms)
-- Returns 1 if the caller holds the lease after a 'hold' (or held it before a 'release'), else 0.

local holder = redis.call('GET', KEYS[1])
if ARGV[2] == 'release' then
  if holder ~= ARGV[1] then return 0 end
  redis.call('DEL', KEYS[1])
  return 1
end
if holder and holder ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
