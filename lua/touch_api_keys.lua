#!lua
-- touch_api_keys: record when API keys were last used (each API replica, every few seconds).
--
-- KEYS[1] key directory <p>:apikeys, KEYS[2] last uses <p>:apikeys:used,
-- KEYS[3] last uses not yet in PostgreSQL <p>:apikeys:unsaved
-- ARGV: groups of four: key hash, user id, key id, used_ms (the replica's latest use of the key)
-- Returns how many keys got a newer last use.
--
-- A revoked key (no longer in the directory) is skipped, and an older time never overwrites
-- a newer one, so replicas flush in any order. No event: a use is not a change of state a
-- subscriber needs (and a request, even a refused one, must not add to the stream); the
-- persister copies KEYS[3] to PostgreSQL on its own (lua/forget_unchanged.lua). The user's
-- last event is left alone: the last use is kept apart from the user (never evicted), so it
-- never holds back an eviction.

local newer = 0
local now = tonumber(now_ms())
for i = 1, #ARGV, 4 do
  local hash, user_id, key_id = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local used = math.min(tonumber(ARGV[i + 3]), now)
  if redis.call('HGET', KEYS[1], hash) == user_id then
    local before = tonumber(redis.call('HGET', KEYS[2], key_id) or '0')
    if used > before then
      local text = string.format('%d', used)
      redis.call('HSET', KEYS[2], key_id, text)
      redis.call('HSET', KEYS[3], key_id, text)
      newer = newer + 1
    end
  end
end
return newer
