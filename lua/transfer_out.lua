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
redis.call('HSET', KEYS[1], 'available', after)
-- What this sub-wallet sent and received by transfers, ever: an account read over shards uses
-- them to see a transfer caught between its debit and its credit (engine/sharded.py).
redis.call('HINCRBY', KEYS[1], 'moved_out', ARGV[5])
redis.call('SET', KEYS[2], table.concat({'out', ARGV[2], ARGV[3], ARGV[4], ARGV[5], ms}, '|'))
redis.call('ZADD', KEYS[3], ms, ARGV[1])
redis.call('HINCRBY', KEYS[5], 'transfers_out', ARGV[5])
local event = redis.call('XADD', KEYS[4], '*', 'type', 'TransferOut', 'ts', ms, 'transfer_id', ARGV[1],
  'user_id', ARGV[2], 'from_shard', ARGV[3], 'to_shard', ARGV[4], 'amount', fmt6(ARGV[5]),
  'available', fmt6(after))
redis.call('HSET', KEYS[1], 'last_event', event)
return {'OK', after, event}
