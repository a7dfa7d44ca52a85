#!lua
-- create_user: register an account with zero balance.
--
-- KEYS[1] user hash        <p>:u:<user>
-- KEYS[2] usernames hash   <p>:usernames
-- KEYS[3] api key hash     <p>:apikeys
-- KEYS[4] events stream    <p>:events
-- KEYS[5] user id set      <p>:user_ids
-- KEYS[6] the user's keys   <p>:ukeys:<user>
-- ARGV[1] user id, ARGV[2] username, ARGV[3] sha256 hex of the API key ('' for none),
-- ARGV[4] the key's id, ARGV[5] its last 4 characters
-- Returns {created_ms}.
-- Errors: ALREADY_EXISTS (user id or username taken). Emits UserCreated, then ApiKeyCreated
-- {user_id, key_id, key_hash, last4} when a key is given (the key made at creation is one of
-- the user's listed keys, see lua/create_api_key.lua).
--
-- The id set, the usernames and the key hashes are the directory: the janitor never
-- evicts them, so an evicted user's id and name stay taken without asking PostgreSQL.

if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('SISMEMBER', KEYS[5], ARGV[1]) == 1 then
  return reject('ALREADY_EXISTS', 'user_id ' .. ARGV[1] .. ' is taken')
end
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then
  return reject('ALREADY_EXISTS', 'username is taken')
end
local ms = now_ms()
redis.call('HSET', KEYS[1], 'username', ARGV[2], 'available', '0', 'locked', '0',
  'key_hash', ARGV[3], 'created_ms', ms)
redis.call('HSET', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[5], ARGV[1])
local event = redis.call('XADD', KEYS[4], '*', 'type', 'UserCreated', 'ts', ms,
  'user_id', ARGV[1], 'username', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[3], ARGV[3], ARGV[1])
  redis.call('HSET', KEYS[6], ARGV[4], ARGV[3] .. '|' .. ms .. '|' .. ARGV[5])
  event = redis.call('XADD', KEYS[4], '*', 'type', 'ApiKeyCreated', 'ts', ms, 'user_id', ARGV[1],
    'key_id', ARGV[4], 'key_hash', ARGV[3], 'last4', ARGV[5])
end
redis.call('HSET', KEYS[1], 'last_event', event)
return {ms}
