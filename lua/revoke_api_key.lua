#!lua
-- revoke_api_key: revoke one of a user's API keys; the next request with it is 401 everywhere.
--
-- KEYS[1] user hash <p>:u:<user>, KEYS[2] its keys <p>:ukeys:<user>,
-- KEYS[3] key directory <p>:apikeys, KEYS[4] last uses <p>:apikeys:used, KEYS[5] events stream
-- ARGV[1] user id, ARGV[2] key id, ARGV[3] the user's creation key hash if the key id names it
-- and it has no record (a key made before records existed), else ''
-- Returns 1.
-- Errors: NOT_FOUND (no such user resident, or no live key of that id for this user).
-- Emits ApiKeyRevoked {user_id, key_id, key_hash, last4, created_ms}: the whole row, so the
-- persister writes it even if it commits this before the ApiKeyCreated.
--
-- The directory decides authentication (api/auth.py reads it on every request), so deleting
-- the hash from it is the revocation: no replica caches a positive answer.

local user = redis.call('HMGET', KEYS[1], 'username', 'key_hash', 'created_ms')
if not user[1] then return reject('NOT_FOUND', 'no user ' .. ARGV[1]) end
local hash, created, last4
local record = redis.call('HGET', KEYS[2], ARGV[2])
if record then
  hash, created, last4 = string.match(record, '^([^|]*)|([^|]*)|(.*)$')
elseif ARGV[3] ~= '' and user[2] == ARGV[3] then
  hash, created, last4 = ARGV[3], user[3], ''
else
  return reject('NOT_FOUND', 'no API key ' .. ARGV[2])
end
redis.call('HDEL', KEYS[2], ARGV[2])
if redis.call('HGET', KEYS[3], hash) == ARGV[1] then redis.call('HDEL', KEYS[3], hash) end
redis.call('HDEL', KEYS[4], ARGV[2])
if user[2] == hash then redis.call('HSET', KEYS[1], 'key_hash', '') end
local event = redis.call('XADD', KEYS[5], '*', 'type', 'ApiKeyRevoked', 'ts', now_ms(), 'user_id', ARGV[1],
  'key_id', ARGV[2], 'key_hash', hash, 'last4', last4, 'created_ms', created)
redis.call('HSET', KEYS[1], 'last_event', event)
return 1
