#!lua flags=allow-oom
-- forget_unchanged: drop hash fields a caller read and is done with, each only while it still holds the
-- value that caller read: one written since (a newer value) stays for the caller's next round.
-- Used for the API keys' last uses the persister has copied to PostgreSQL (persister/key_uses.py) and
-- for the eviction marks the janitor found old enough (persister/janitor.py). allow-oom: it only frees.
--
-- KEYS[1] the hash: <p>:apikeys:unsaved, or the evicted users hash <p>:evicted
-- ARGV: pairs of field, value as read
-- Returns how many were dropped.

local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
