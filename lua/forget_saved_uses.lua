#!lua
-- forget_saved_uses: the persister has copied these last uses to PostgreSQL; stop holding them.
--
-- KEYS[1] last uses not yet in PostgreSQL <p>:apikeys:unsaved
-- ARGV: pairs of key id, used_ms as the persister read and saved them
-- Returns how many were forgotten.
--
-- A use newer than the one saved (a replica flushed meanwhile) stays for the next round.

local forgotten = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    forgotten = forgotten + 1
  end
end
return forgotten
