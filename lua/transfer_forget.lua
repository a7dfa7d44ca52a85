#!lua flags=allow-oom
-- transfer_forget: the last step of a transfer (engine/transfers.py), on the destination shard
-- once the source has marked it done: its credit record expires after ARGV[1] seconds rather
-- than staying for good. Nothing sends transfer_in for a done transfer (the sweeper reads only
-- the outbox); the expiry still leaves a late re-send its DUP answer for that long.
--
-- KEYS[1] the transfer's record in the destination shard <d>:xfer:<id>
-- ARGV[1] seconds to keep it
-- Returns 1 if it was there.

return redis.call('EXPIRE', KEYS[1], ARGV[1])
