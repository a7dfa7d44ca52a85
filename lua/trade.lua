-- trade: apply a batch of priced orders to one market, compare-and-set on its version.
--
-- KEYS[1] market hash <p>:{m:<id>}, KEYS[2] market positions <p>:{m:<id>}:pos,
-- KEYS[3] events stream, KEYS[4] trade id counter <p>:trade_seq, KEYS[5] dirty set,
-- then per order i: KEYS[3i+3] user hash, KEYS[3i+4] user positions, KEYS[3i+5] idempotency key
-- ARGV[1] market id, ARGV[2] expected "<version>:<q_yes>:<q_no>", ARGV[3] idempotency TTL (seconds),
-- then per order i, 11 fields from ARGV[11i-7]:
--   user id, side BUY|SELL, outcome YES|NO, shares, cost (micro-units, integer strings;
--   cost is paid on BUY, received on SELL), price_yes, price_no, avg_price (6-decimal
--   strings, after the order), request fingerprint ('' = no Idempotency-Key),
--   rejection ('' = execute, else "<CODE> <message>" decided by the engine),
--   the Idempotency-Key itself (recorded on the event so recovery can restore it).
-- Returns
--   {'CONFLICT', version, status, q_yes, q_no, pool}       version differs: nothing applied
--   {'DONE', version, status, q_yes, q_no, pool, ts_ms, results}  with one result per order:
--     {'OK', trade_id, available, position, event_id}   applied; event_id is the
--                                              stream entry of its PriceUpdated (its last event)
--     {'REPLAY', stored}                       Idempotency-Key seen with the same request
--     {'<CODE>', message}                      rejected, nothing changed for this order
--     {'SKIPPED'}                              not attempted: an earlier order the engine
--                                              priced as executing did not execute, so
--                                              this one's price is stale; re-price and resend
-- Errors: NOT_FOUND (no market). Per-order codes: MARKET_NOT_OPEN, NOT_FOUND,
-- INSUFFICIENT_FUNDS, INSUFFICIENT_SHARES, VALIDATION_ERROR, IDEMPOTENCY_KEY_REUSED.
-- Emits TradeExecuted then PriceUpdated per applied order (+ position, avg_price in TradeExecuted,
-- and idempotency_key, request_hash when the order carried a key).
--
-- The engine computed every cost from the state at `expected version`; the
-- version check makes those costs exact, and the per-order checks below keep
-- each order's funds, shares and limits atomic with its debit.

local mkey, mpos, events, seq, dirty = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local mid, expected, ttl = ARGV[1], ARGV[2], ARGV[3]
local st = redis.call('HMGET', mkey, 'status', 'version', 'q_yes', 'q_no', 'pool')
if not st[1] then return reject('NOT_FOUND', 'no market ' .. mid) end
if st[2] .. ':' .. st[3] .. ':' .. st[4] ~= expected then return {'CONFLICT', st[2], st[1], st[3], st[4], st[5]} end

local open = st[1] == 'OPEN'
local ms = now_ms()
local q = {YES = st[3], NO = st[4]}
local pool = st[5]

local last_event, last_trade

local function neg(s)
  if s == '0' then return '0' end
  return '-' .. s
end

local function apply(k, user_id, side, outcome, shares, cost, py, pn, avg, fp, idem)
  local available = redis.call('HGET', KEYS[k + 1], 'available')
  if not available then return {'NOT_FOUND', 'no user ' .. user_id} end
  local field = user_id .. ':' .. outcome
  local held = tonumber(redis.call('HGET', mpos, field) or '0')
  local n_shares, n_cost = tonumber(shares), tonumber(cost)
  local d_cash, d_shares, d_pool
  if side == 'BUY' then
    if tonumber(available) < n_cost then
      return {'INSUFFICIENT_FUNDS', 'available ' .. fmt6(available) .. ' < cost ' .. fmt6(cost)}
    end
    if tonumber(pool) + n_cost > MAX_TOTAL or held + n_shares > MAX_TOTAL
        or tonumber(q[outcome]) + n_shares > MAX_TOTAL then
      return {'VALIDATION_ERROR', 'a position, pool or outstanding total would exceed 9000000000'}
    end
    d_cash, d_shares, d_pool = neg(cost), shares, cost
  else
    if held < n_shares then
      return {'INSUFFICIENT_SHARES', 'holding ' .. fmt6(held) .. ' < ' .. fmt6(shares)}
    end
    if tonumber(available) + n_cost > MAX_TOTAL then
      return {'VALIDATION_ERROR', 'balance would exceed 9000000000'}
    end
    d_cash, d_shares, d_pool = cost, neg(shares), neg(cost)
  end
  available = int_str(redis.call('HINCRBY', KEYS[k + 1], 'available', d_cash))
  local position = int_str(hincr_or_drop(mpos, field, d_shares))
  hincr_or_drop(KEYS[k + 2], mid .. ':' .. outcome, d_shares)
  q[outcome] = int_str(redis.call('HINCRBY', mkey, outcome == 'YES' and 'q_yes' or 'q_no', d_shares))
  pool = int_str(redis.call('HINCRBY', mkey, 'pool', d_pool))
  local trade_id = int_str(redis.call('INCR', seq))
  local fields = {'type', 'TradeExecuted', 'ts', ms, 'trade_id', trade_id,
    'market_id', mid, 'user_id', user_id, 'side', side, 'outcome', outcome,
    'shares', fmt6(shares), 'cost', fmt6(cost), 'price_yes', py, 'price_no', pn,
    'yes_shares', fmt6(q.YES), 'no_shares', fmt6(q.NO), 'pool', fmt6(pool),
    'available', fmt6(available), 'position', fmt6(position), 'avg_price', avg}
  if fp ~= '' then
    table.insert(fields, 'idempotency_key')
    table.insert(fields, idem)
    table.insert(fields, 'request_hash')
    table.insert(fields, fp)
  end
  redis.call('XADD', events, '*', unpack(fields))
  last_event = redis.call('XADD', events, '*', 'type', 'PriceUpdated', 'ts', ms, 'market_id', mid,
    'price_yes', py, 'price_no', pn, 'yes_shares', fmt6(q.YES), 'no_shares', fmt6(q.NO))
  if fp ~= '' then
    redis.call('SET', KEYS[k + 3], table.concat({fp, trade_id, side, outcome, shares, cost,
      avg, py, pn, ms, last_event}, '|'), 'EX', ttl)
  end
  last_trade = trade_id
  return {'OK', trade_id, available, position, last_event}
end

local results = {}
local applied = 0
local broken = false
for i = 1, (#ARGV - 3) / 11 do
  local a, k = 3 + 11 * (i - 1), 5 + 3 * (i - 1)
  local fp, rejection = ARGV[a + 9], ARGV[a + 10]
  local r
  if broken then
    r = {'SKIPPED'}
  else
    if fp ~= '' then
      local prev = redis.call('GET', KEYS[k + 3])
      if prev then
        if string.sub(prev, 1, #fp + 1) == fp .. '|' then
          r = {'REPLAY', prev}
        else
          r = {'IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was already used with a different request'}
        end
      end
    end
    if not r then
      if not open then
        r = {'MARKET_NOT_OPEN', 'market is ' .. st[1]}
      elseif rejection ~= '' then
        local sp = string.find(rejection, ' ', 1, true) or (#rejection + 1)
        r = {string.sub(rejection, 1, sp - 1), string.sub(rejection, sp + 1)}
      else
        r = apply(k, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5],
          ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], fp, ARGV[a + 11])
      end
    end
    -- Later orders were priced as if this one executed: if it did not, stop.
    if r[1] ~= 'OK' and open and rejection == '' then broken = true end
  end
  if r[1] == 'OK' then applied = applied + 1 end
  results[i] = r
end

local version = st[2]
if applied > 0 then
  version = int_str(touch_market(mkey, dirty, mid, ms, last_event, applied))
  redis.call('HSET', mkey, 'last_trade_id', last_trade)
end
return {'DONE', version, st[1], q.YES, q.NO, pool, ms, results}
