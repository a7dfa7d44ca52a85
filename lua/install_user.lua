#!lua
-- install_user: put a user loaded from PostgreSQL back into Redis, only if it is absent.
--
-- KEYS[1] user hash, KEYS[2] usernames hash, KEYS[3] API key hash,
-- KEYS[4] evicted users hash <p>:evicted (user id -> its last event when evicted),
-- KEYS[5] the user's API keys <p>:ukeys:<user>, KEYS[6] the user's net costs <p>:u:<user>:cost
-- ARGV[1] user id, ARGV[2] username, ARGV[3] available, ARGV[4] locked (micro-units),
-- ARGV[5] key hash ('' for none), ARGV[6] created_ms, ARGV[7] loaded_ms,
-- ARGV[8] '1' if PostgreSQL records positions of the user, '0' if not,
-- ARGV[9] the stream id of the newest event the PostgreSQL rows include (balance and keys),
-- ARGV[10] moved_in, ARGV[11] moved_out: what the sub-wallet ever received and sent by transfers
-- over shards ('' where it never did: no field, as HINCRBY makes it),
-- ARGV[12] when the load began reading PostgreSQL (ms, Redis's clock), ARGV[13] the reload window (ms:
-- engine/hotset.py's RELOAD_WINDOW_MS),
-- ARGV[14] n, the number of net costs that follow, ARGV[15..14+2n] pairs "<market>:<outcome>",
-- net cost (micro-units) of the user's positions in markets not SETTLED (position_state),
-- then groups of three for each live key in api_keys: key id, key hash, its record
-- (engine/api_keys.py's KeyRecord)
-- Returns 1 if installed; 0 if the user was already there (another loader or the live
-- state won: nothing is overwritten, so two loads or a load racing a trade lose nothing);
-- -1 if it is absent although it holds positions (refused); -2 if the row is older than
-- the user's last eviction, -3 if it was read longer than the reload window ago (both refused:
-- read it again).
--
-- Residency is checked first and in the same step as the refusals: positions read from
-- PostgreSQL may be trades the user made after another request reinstalled it, which is
-- no loss. Absent with positions is one: the janitor never evicts a holder, so Redis lost
-- the user, and only `predmarket recover` restores positions consistently on both sides.
-- A row read before another request reinstalled the user, which then traded and was
-- evicted again, would bring back the old balance: the eviction's mark refuses it. The janitor
-- forgets a mark long after its eviction (EVICTED_MARK_KEEP_MS), which is safe because a row read
-- before that eviction is refused here anyway once the reload window has passed.

if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
if tonumber(now_ms()) - tonumber(ARGV[12]) > tonumber(ARGV[13]) then return -3 end
-- "<last event>|<eviction ms>" (an earlier release wrote the last event alone)
local gone = redis.call('HGET', KEYS[4], ARGV[1])
if gone then gone = string.match(gone, '^[^|]+') end
if gone and id_less(ARGV[9], gone) then return -2 end
if ARGV[8] == '1' then return -1 end
redis.call('HSET', KEYS[1], 'username', ARGV[2], 'available', ARGV[3], 'locked', ARGV[4],
  'key_hash', ARGV[5], 'created_ms', ARGV[6], 'loaded_ms', ARGV[7], 'last_event', ARGV[9])
if ARGV[10] ~= '' then redis.call('HSET', KEYS[1], 'moved_in', ARGV[10]) end
if ARGV[11] ~= '' then redis.call('HSET', KEYS[1], 'moved_out', ARGV[11]) end
-- A sub-wallet outside the user's home shard has no name (lua/transfer_in.lua): nothing to list.
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[2], ARGV[1]) end
if ARGV[5] ~= '' then redis.call('HSET', KEYS[3], ARGV[5], ARGV[1]) end
local n_costs = tonumber(ARGV[14])
for i = 15, 14 + 2 * n_costs, 2 do
  redis.call('HSET', KEYS[6], ARGV[i], ARGV[i + 1])
end
for i = 15 + 2 * n_costs, #ARGV, 3 do
  redis.call('HSET', KEYS[5], ARGV[i], ARGV[i + 2])
  redis.call('HSET', KEYS[3], ARGV[i + 1], ARGV[1])
end
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
