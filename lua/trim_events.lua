#!lua flags=allow-oom
-- trim_events: drop the oldest stream entries, but only acknowledged ones, keeping at least `keep`.
--
-- KEYS[1] events stream
-- ARGV[1] committed mark (entries up to it are acknowledged by the persister group)
-- ARGV[2] keep: entries always kept, ARGV[3] chunk: entries removed at most per call
-- Returns the number of entries removed (call again while it equals the chunk).

local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[2])
if excess <= 0 then return 0 end
local take = math.min(excess, tonumber(ARGV[3]))
local entries = redis.call('XRANGE', KEYS[1], '-', ARGV[1], 'COUNT', take)
if #entries == 0 then return 0 end
local ms, seq = parse_id(entries[#entries][1])
-- MINID drops ids below the threshold: the successor of the last entry to drop.
redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', ms, seq + 1))
return #entries
