#!lua flags=allow-oom
-- evict_user: drop an idle user from Redis once PostgreSQL holds every byte of its state.
--
-- KEYS[1] user hash <p>:u:<user>, KEYS[2] its positions <p>:u:<user>:pos,
-- KEYS[3] evicted users hash <p>:evicted, KEYS[4] its API keys <p>:ukeys:<user>,
-- KEYS[5] its net costs <p>:u:<user>:cost
-- ARGV[1] user id, ARGV[2] the user's last_event as the janitor read it,
-- ARGV[3] the persister's committed mark (every entry up to it is in PostgreSQL)
-- Returns 1 if evicted, 0 if the user changed, holds positions, is house, or its last
-- event is not yet committed (then it stays; the next round looks again).
--
-- A user with any position stays: positions live in the market's hash too, and a
-- market's settlement walks them, so they are never taken out of Redis piecemeal.
-- Every operation that changes a user needs its hash, so once it is gone nothing
-- can change the user until a loader installs it again from PostgreSQL. Its id, username
-- and live key hashes stay (the directory, see engine/keys.py): they stay taken, and its
-- keys still name it, without asking PostgreSQL; the keys' records go (the loader puts the
-- live ones back from api_keys), and so do its net costs (position_state holds them, the
-- market's copies stay: a market's net costs live as long as the market). Its last event stays too, as the
-- mark "<last event>|<eviction ms>": a load installs only a PostgreSQL row that includes it
-- (install_user.lua), and the janitor forgets marks that are old enough (persister/janitor.py).

if ARGV[1] == 'house' then return 0 end
local user = redis.call('HMGET', KEYS[1], 'last_event', 'username')
if not user[2] then return 0 end
local last = user[1] or '0-0'
if last ~= ARGV[2] or id_less(ARGV[3], last) then return 0 end
if redis.call('HLEN', KEYS[2]) > 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[4], KEYS[5])
redis.call('HSET', KEYS[3], ARGV[1], last .. '|' .. now_ms())
return 1
