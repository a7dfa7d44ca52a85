#!lua flags=allow-oom
-- transfer_done: the third step of a transfer (engine/transfers.py), on the source shard once the
-- destination has credited it: out of the outbox, its record kept as done for ARGV[2] seconds
-- (a late re-send of transfer_out with the same id still answers DUP).
--
-- KEYS[1] the transfer's record <s>:xfer:<id>, KEYS[2] the source shard's outbox <s>:outbox
-- ARGV[1] transfer id, ARGV[2] seconds to keep the done record
-- Returns 1 if this call marked it done, 0 if it was done already (or never taken out).

local record = redis.call('GET', KEYS[1])
if not record or string.sub(record, 1, 4) ~= 'out|' then return 0 end
redis.call('SET', KEYS[1], 'done|' .. string.sub(record, 5), 'EX', ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
