#!lua
-- create_api_key: give a user another API key.
--
-- KEYS[1] user hash <p>:u:<user>, KEYS[2] its keys <p>:ukeys:<user>,
-- KEYS[3] key directory <p>:apikeys, KEYS[4] events stream
-- ARGV[1] user id, ARGV[2] key id, ARGV[3] sha256 hex of the key, ARGV[4] its last 4 characters,
-- ARGV[5] the most live keys a user may hold
-- Returns {created_ms}.
-- Errors: NOT_FOUND (no such user resident: the caller reloads an evicted one and retries),
-- INVALID_STATE (the user holds the most keys already), ALREADY_EXISTS (the hash is taken).
-- Emits ApiKeyCreated {user_id, key_id, key_hash, last4}; it is the user's last event, so
-- the janitor evicts the user only once PostgreSQL holds the key.
--
-- The record is engine/api_keys.py's KeyRecord: <hash>|<created_ms>|<last4>.

if redis.call('EXISTS', KEYS[1]) == 0 then return reject('NOT_FOUND', 'no user ' .. ARGV[1]) end
if redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[5]) then
  return reject('INVALID_STATE', 'a user holds at most ' .. ARGV[5] .. ' API keys: revoke one first')
end
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 or redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return reject('ALREADY_EXISTS', 'API key ' .. ARGV[2] .. ' exists')
end
local ms = now_ms()
redis.call('HSET', KEYS[2], ARGV[2], ARGV[3] .. '|' .. ms .. '|' .. ARGV[4])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
local event = redis.call('XADD', KEYS[4], '*', 'type', 'ApiKeyCreated', 'ts', ms, 'user_id', ARGV[1],
  'key_id', ARGV[2], 'key_hash', ARGV[3], 'last4', ARGV[4])
redis.call('HSET', KEYS[1], 'last_event', event)
return {ms}
