#!lua flags=allow-oom
-- forget_marks: drop the eviction marks the janitor found old enough (persister/janitor.py), each only
-- if it is still the mark the janitor read: a user evicted again since has a newer mark, which stays.
--
-- KEYS[1] evicted users hash <p>:evicted
-- ARGV pairs: user id, its mark "<last event>|<eviction ms>" as read
-- Returns how many marks were dropped.

local dropped = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    dropped = dropped + 1
  end
end
return dropped
