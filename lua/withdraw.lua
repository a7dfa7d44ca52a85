#!lua
-- withdraw: pay money out of an account.
--
-- KEYS[1] user hash <p>:u:<user>, KEYS[2] events stream, KEYS[3] totals hash <p>:totals
-- ARGV[1] user id, ARGV[2] amount (micro-units, > 0)
-- Returns {available} after the withdrawal, as an integer string.
-- Errors: NOT_FOUND, INSUFFICIENT_FUNDS. Emits Withdrawal {user_id, amount, available}.
--
-- The balance may be past 2^53 (payouts are credited without bound): it is compared and
-- reduced exactly on its decimal string (HINCRBY's reply would reach Lua as a double).

local available = redis.call('HGET', KEYS[1], 'available')
if not available then return reject('NOT_FOUND', 'no user ' .. ARGV[1]) end
if lt_int(available, ARGV[2]) then
  return reject('INSUFFICIENT_FUNDS', 'available ' .. fmt6(available) .. ' < ' .. fmt6(ARGV[2]))
end
local after = sub_int(available, ARGV[2])
redis.call('HSET', KEYS[1], 'available', after)
redis.call('HINCRBY', KEYS[3], 'withdrawals', ARGV[2])
local event = redis.call('XADD', KEYS[2], '*', 'type', 'Withdrawal', 'ts', now_ms(),
  'user_id', ARGV[1], 'amount', fmt6(ARGV[2]), 'available', fmt6(after))
redis.call('HSET', KEYS[1], 'last_event', event)
return {after}
