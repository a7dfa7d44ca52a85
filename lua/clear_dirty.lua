#!lua flags=allow-oom
-- clear_dirty: unmark markets the idle flush has written, unless they changed since it read them.
--
-- KEYS[1] dirty set <p>:dirty
-- ARGV: pairs of (market id, score the flush saw)
-- Returns the number of markets unmarked.

local cleared = 0
for i = 1, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZREM', KEYS[1], ARGV[i])
    cleared = cleared + 1
  end
end
return cleared
