#!lua
-- transfer_out: the first step of moving a user's money from one of its sub-wallets to another
-- (engine/transfers.py): debit the source sub-wallet and record the transfer as pending.
--
-- KEYS[1] the user's sub-wallet in the source shard <s>:u:<user>, KEYS[2] the transfer's record
--   there <s>:xfer:<id>, KEYS[3] the source shard's outbox <s>:outbox, KEYS[4] its events stream,
--   KEYS[5] its totals hash <s>:totals (<s> = the source shard's prefix, engine/shards.py)
-- ARGV[1] transfer id, ARGV[2] user id, ARGV[3] source shard, ARGV[4] destination shard,
--   ARGV[5] amount (micro-units, > 0)
-- Returns {'OK', available after, event id}, or {'DUP', record} when this transfer id was taken
--   out before (pending or done): nothing changes, so a re-sent call never debits twice.
-- Errors: NOT_FOUND (no sub-wallet), INSUFFICIENT_FUNDS.
-- Emits TransferOut {transfer_id, user_id, from_shard, to_shard, amount, available}.
--
-- The record stays, without expiry, while the transfer is pending (the outbox, scored by
-- when, lists it for the sweeper): its id can then never be debited again.

local record = redis.call('GET', KEYS[2])
if record then return {'DUP', record} end
local available = redis.call('HGET', KEYS[1], 'available')
if not available then return reject('NOT_FOUND', 'no sub-wallet of ' .. ARGV[2] .. ' in shard ' .. ARGV[3]) end
if lt_int(available, ARGV[5]) then
  return reject('INSUFFICIENT_FUNDS', 'available ' .. fmt6(available) .. ' < transfer ' .. fmt6(ARGV[5]))
end
local after = sub_int(available, ARGV[5])
local ms = now_ms()
redis.call('ZADD', KEYS[3], ms, ARGV[1])
local event = record_transfer_step('out', KEYS[1], KEYS[2], KEYS[5], KEYS[4], ARGV, after, ms)
return {'OK', after, event}
