#!lua
-- claim_username: a sharded deployment's claim of a username in its directory (engine/sharded.py),
-- taking over a claim whose account was never made.
--
-- KEYS[1] the deployment's username directory <p>:usernames
-- ARGV[1] username, ARGV[2] the user id claiming it, ARGV[3] the claim it may replace ('' for
--   none: only a free name), ARGV[4] how old that claim must be to be replaced (ms)
-- Returns {1, ''} when the name is now the caller's; {0, claim} with the claim that holds it.
--
-- A claim is "<user id>|<ms>" (server time). The account is made in its home shard after the
-- claim, by another call: a process that died in between leaves a claim with no account, which
-- the caller (having seen that the account does not exist) may take over once it is older than
-- ARGV[4], so that a creation in flight elsewhere is never taken over.

local held = redis.call('HGET', KEYS[1], ARGV[1])
local ms = now_ms()
if held and (ARGV[3] == '' or held ~= ARGV[3]) then return {0, held} end
if held then
  local _, _, claimed_ms = string.find(held, '|(%d+)$')
  if not claimed_ms or tonumber(ms) - tonumber(claimed_ms) < tonumber(ARGV[4]) then return {0, held} end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ms)
return {1, ''}
