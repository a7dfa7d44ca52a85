#!lua
-- deposit: credit money from outside to an account.
--
-- KEYS[1] user hash <p>:u:<user>, KEYS[2] events stream, KEYS[3] totals hash <p>:totals
-- ARGV[1] user id, ARGV[2] amount (micro-units, > 0); over S shards, ARGV[3]: the user's money
-- in its other sub-wallets (a signed integer string, engine/sharded.py's own_money), so that the
-- bound holds for the whole balance, and ARGV[4]: this shard's share of the deposits' bound,
-- floor((2^63 - 1) / S), so that all shards' deposits together stay within int64.
-- Returns {available} after the deposit, as an integer string.
-- Errors: NOT_FOUND (no such user), VALIDATION_ERROR (balance would pass 9e9 units, or the
-- ledger's total deposits would pass 2^63 - 1 micro-units, or this shard's share of it).
-- Emits Deposit {user_id, amount, available}.
--
-- Every balance and pool is money deposited and not withdrawn (conservation), so keeping
-- the total of all deposits within int64 keeps every balance there too: the credits that
-- are never refused (proceeds, payouts, the house's return) then can never overflow
-- HINCRBY or pass the range where balances are exact. Checked before any write, so a
-- refused deposit changes nothing.

local available = redis.call('HGET', KEYS[1], 'available')
if not available then return reject('NOT_FOUND', 'no user ' .. ARGV[1]) end
local after = add_int(available, ARGV[2])
-- The whole balance as over - under (both non-negative, as the *_int helpers need): this
-- sub-wallet's balance after the deposit, plus what it sent to the user's other sub-wallets and
-- less what it received from them (each sub-wallet's balance so counted moves only with deposits,
-- withdrawals and trades, so transfers in flight between the caller's read and this script can
-- neither hide money from the bound nor count it twice), plus the other sub-wallets so counted.
local over, under = after, '0'
if ARGV[3] then
  local moved = redis.call('HMGET', KEYS[1], 'moved_out', 'moved_in')
  over, under = add_int(over, moved[1] or '0'), moved[2] or '0'
  if string.sub(ARGV[3], 1, 1) == '-' then
    under = add_int(under, string.sub(ARGV[3], 2))
  else
    over = add_int(over, ARGV[3])
  end
end
if lt_int(add_int(MAX_TOTAL_STR, under), over) then
  return reject('VALIDATION_ERROR', 'balance would exceed 9000000000')
end
local deposits = redis.call('HGET', KEYS[3], 'deposits') or '0'
local most = ARGV[4] or MAX_EXACT_STR
if lt_int(most, add_int(deposits, ARGV[2])) then
  return reject('VALIDATION_ERROR', 'total deposits would exceed ' .. fmt6(most))
end
redis.call('HSET', KEYS[1], 'available', after)
redis.call('HINCRBY', KEYS[3], 'deposits', ARGV[2])
local event = redis.call('XADD', KEYS[2], '*', 'type', 'Deposit', 'ts', now_ms(),
  'user_id', ARGV[1], 'amount', fmt6(ARGV[2]), 'available', fmt6(after))
redis.call('HSET', KEYS[1], 'last_event', event)
return {after}
