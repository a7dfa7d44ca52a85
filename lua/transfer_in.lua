#!lua flags=allow-oom
-- transfer_in: the second step of a transfer (engine/transfers.py): credit the destination
-- sub-wallet, at most once per transfer id.
--
-- KEYS[1] the user's sub-wallet in the destination shard <d>:u:<user>, KEYS[2] the transfer's
--   record there <d>:xfer:<id>, KEYS[3] the destination shard's events stream, KEYS[4] its totals
--   hash <d>:totals, KEYS[5] its evicted users <d>:evicted (<d> = the destination shard's prefix,
--   engine/shards.py)
-- ARGV[1] transfer id, ARGV[2] user id, ARGV[3] source shard, ARGV[4] destination shard,
--   ARGV[5] amount (micro-units, > 0)
-- Returns {'OK', available after, event id}, {'DUP'} when this transfer was credited before, or
-- {'EVICTED'} when the sub-wallet is out of Redis (the janitor evicted it: its money is in
-- PostgreSQL): nothing changes; the caller loads it (record/loader.py) and sends this step again.
-- Making a fresh sub-wallet there would give the record a newer balance without the evicted money.
-- Emits TransferIn {transfer_id, user_id, from_shard, to_shard, amount, available}.
--
-- A sub-wallet appears on its first credit, with an empty username (the user's name and keys
-- live in its home shard). The record has no expiry until the source has
-- marked the transfer done (transfer_forget.lua gives it one): as long as anyone may still
-- send this step, it answers DUP.

if redis.call('EXISTS', KEYS[2]) == 1 then return {'DUP'} end
local available = redis.call('HGET', KEYS[1], 'available')
local ms = now_ms()
if not available then
  if redis.call('HEXISTS', KEYS[5], ARGV[2]) == 1 then return {'EVICTED'} end
  -- A new sub-wallet: an account hash with no name (the name and keys live in the home shard),
  -- so whatever reads the shard's accounts (its balances, positions, invariants) counts it.
  available = '0'
  redis.call('HSET', KEYS[1], 'username', '', 'locked', '0', 'created_ms', ms)
end
local after = add_int(available, ARGV[5])
local event = record_transfer_step('in', KEYS[1], KEYS[2], KEYS[4], KEYS[3], ARGV, after, ms)
return {'OK', after, event}
