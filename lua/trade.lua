#!lua
-- trade: apply batches of priced orders to one or more markets, each compare-and-set on its state.
--
-- KEYS[1] events stream, KEYS[2] trade id counter <p>:trade_seq, KEYS[3] dirty set, then per
--   market, in ARGV's order: its hash <p>:{m:<id>}, its positions hash <p>:{m:<id>}:pos, its
--   net costs hash <p>:{m:<id>}:cost, then per order of it, in order: the user's hash
--   <p>:u:<user>, the user's positions hash <p>:u:<user>:pos, the user's net costs hash
--   <p>:u:<user>:cost, the idempotency key <p>:idem:<user>:<key> (for an order without an
--   Idempotency-Key, the user's hash again: a declared key never used as one). So a market of
--   n orders takes 3 + 4n keys (engine/wire.py's market_keys and order_keys).
-- ARGV[1] idempotency TTL (seconds), ARGV[2] and ARGV[3] the trade ids' stride and offset (the
--   n-th trade of this counter gets id n * stride + offset: 1 and 0 for one shard; S and k for
--   shard k of S, so ids stay unique across shards), then per market:
--   market id, expected "<version>:<q_1>:...:<q_n>" (each label's outstanding total, in label
--   order: "<version>:<q_yes>:<q_no>" for a YES/NO market), n (orders), then n order lines, each
--   engine/wire.py's OrderLine: the TAB-joined fields user id, side BUY|SELL, outcome (a label of
--   the market), shares, cost (micro-units; cost is paid on BUY, received on SELL), prices (every
--   label's, comma-joined in label order) and avg_price (6-decimal strings, after the order; ''
--   when not priced), request hash
--   ('' = no Idempotency-Key), rejection ('' = execute, else "<CODE> <message>" decided by the
--   engine), the Idempotency-Key itself, sell_all ('1' = a SELL of "shares": "all": shares is
--   the holding the engine priced, executed or rejected only while the user holds exactly that).
-- Returns one reply per market, in order:
--   {'NOT_FOUND'}                                          no such market
--   {'CONFLICT', version, status, pool, totals}            state differs: nothing applied
--   {'DONE', version, status, pool, totals, ts_ms, results}  with one result per order:
--     (totals: each label's outstanding total, ':'-joined in label order)
--     {'OK', trade_id, available, position, event_id}   applied; event_id is the stream
--                                              entry of its PriceUpdated (its last event)
--     {'REPLAY', stored}                       Idempotency-Key seen with the same request;
--                                              stored is engine/wire.py's StoredReply
--     {'<CODE>', message}                      rejected, nothing changed for this order
--     {'SKIPPED'}                              not attempted: an earlier order the engine
--                                              priced as executing did not execute, so
--                                              this one's price is stale; re-price and resend
--     {'HELD', shares}                         a sell_all order whose user now holds `shares`,
--                                              not what it was priced for: nothing changed;
--                                              re-price for `shares` and resend
-- Per-order codes: MARKET_NOT_OPEN, NOT_FOUND, INSUFFICIENT_FUNDS, INSUFFICIENT_SHARES,
-- VALIDATION_ERROR, IDEMPOTENCY_KEY_REUSED.
-- Emits TradeExecuted then PriceUpdated per applied order (+ position, net_cost, avg_price in
-- TradeExecuted, and idempotency_key, request_hash when the order carried a key). A YES/NO market's
-- carry price_yes, price_no, yes_shares, no_shares; any other market's TradeExecuted carries prices
-- and outstanding instead, JSON text {label: decimal}; every PriceUpdated carries prices and shares
-- as JSON text (and a YES/NO market's the four fields as well). MarketClosed
-- (and no trade) for an OPEN market whose close time this call's clock has reached: its orders
-- answer MARKET_NOT_OPEN.
--
-- Net cost: each position's buys minus sells (signed micro-units), kept in both net cost hashes
-- (the same value) even once the shares are gone; the market's copy is the one added to.
--
-- The engine computed every cost from the state it expects; the state check makes those
-- costs exact, and the per-order checks keep each order's funds, shares and limits atomic
-- with its debit. Every key arrives in KEYS, named by engine/keys.py alone.

local events, seq, dirty = KEYS[1], KEYS[2], KEYS[3]
local ttl, id_stride, id_offset = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
-- Counters kept here and written once at the end, not once per trade.
local last_id = tonumber(redis.call('GET', seq) or '0')
local first_id = last_id

-- The order line's eleven TAB-separated fields, matched in one call: splitting them one by one
-- cost about 3 us of script time per order, matching them 0.9 (no field holds a TAB: the engine
-- writes the free-text rejection without them, and the other fields cannot have one). Written out,
-- not built: a script's top level runs again on every call.
local ORDER_LINE =
  '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$'

-- One order as named fields, written into `o` (one table per script call, reused for each order:
-- a new table per order cost about 0.7 us of script time). The only place the fields' positions
-- are spelled; the format is engine/wire.py's OrderLine (same fields, same order): change both together.
local order = {user_id = '', side = '', outcome = '', shares = '', cost = '', prices = '', avg_price = '',
  request_hash = '', rejection = '', idempotency_key = '', sell_all = false}

local function read_order_line(s, o)
  local user_id, side, outcome, shares, cost, prices, avg_price, request_hash, rejection,
    idempotency_key, sell_all = string.match(s, ORDER_LINE)
  if not user_id then error('malformed order line: ' .. s) end
  o.user_id, o.side, o.outcome, o.shares, o.cost = user_id, side, outcome, shares, cost
  o.prices, o.avg_price, o.request_hash, o.rejection = prices, avg_price, request_hash, rejection
  o.idempotency_key, o.sell_all = idempotency_key, sell_all == '1'
  return o
end

-- A position's net cost after adding `delta` (a canonical integer string, '-' for a sale), exactly:
-- HINCRBY works in int64 (a net cost stays within +-(2^63 - 1): it is money a user paid or got
-- from the pools); its reply reaches Lua as a double, exact below 2^53, else read back as a string.
local function add_net_cost(m, field, delta)
  local v = redis.call('HINCRBY', m.cost, field, delta)
  if v > -9007199254740992 and v < 9007199254740992 then return string.format('%d', v) end
  return redis.call('HGET', m.cost, field)
end

-- Apply one order to market m (a table of its keys and running state); user_key, user_pos,
-- user_cost and idem_key are the order's keys (see the header). Returns its result.
local function apply(m, o, user_key, user_pos, user_cost, idem_key, ms)
  local user_id, side, outcome, shares, cost = o.user_id, o.side, o.outcome, o.shares, o.cost
  local available = redis.call('HGET', user_key, 'available')
  if not available then return {'NOT_FOUND', 'no user ' .. user_id} end
  local field = user_id .. ':' .. outcome
  local held = tonumber(redis.call('HGET', m.pos, field) or '0')
  local n_shares, n_cost = tonumber(shares), tonumber(cost)
  -- The engine refuses a label the market lacks before it gets here: this only keeps q whole.
  if not m.q[outcome] then return {'VALIDATION_ERROR', 'the market has no outcome ' .. outcome} end
  -- The balance is not bounded (payouts and proceeds are credited past 9e15, past 2^53),
  -- so it is compared and changed exactly on its decimal string; positions, q and the
  -- pool stay at or below 9e15 and are exact as numbers.
  if side == 'BUY' then
    if lt_int(available, cost) then
      return {'INSUFFICIENT_FUNDS', 'available ' .. fmt6(available) .. ' < cost ' .. fmt6(cost)}
    end
    if m.pool + n_cost > MAX_TOTAL or held + n_shares > MAX_TOTAL or m.q[outcome] + n_shares > MAX_TOTAL then
      return {'VALIDATION_ERROR', 'a position, pool or outstanding total would exceed 9000000000'}
    end
    available, held = sub_int(available, cost), held + n_shares
    m.q[outcome], m.pool = m.q[outcome] + n_shares, m.pool + n_cost
  else
    if held < n_shares then
      return {'INSUFFICIENT_SHARES', 'holding ' .. fmt6(held) .. ' < ' .. fmt6(shares)}
    end
    -- Sale proceeds are money owed: credited whatever the balance (never above 2^63 - 1,
    -- which bounds the ledger's total deposits and so every balance: see deposit.lua).
    available, held = add_int(available, cost), held - n_shares
    m.q[outcome], m.pool = m.q[outcome] - n_shares, m.pool - n_cost
  end
  -- New values written outright rather than HINCRBY'd: one command fewer per order, and
  -- exact (the balance by the string arithmetic above, the rest below 9e15 < 2^53). The
  -- user's own positions hash mirrors the market's, so both hold the same number.
  local position, user_field = int_str(held), m.id .. ':' .. outcome
  set_or_drop(m.pos, field, position)
  set_or_drop(user_pos, user_field, position)
  -- Net cost: kept at zero shares too (never dropped), the user's copy set to the market's.
  local delta = cost
  if side == 'SELL' and cost ~= '0' then delta = '-' .. cost end
  local net_cost = add_net_cost(m, field, delta)
  redis.call('HSET', user_cost, user_field, net_cost)
  -- Checked only as a holding starts: these hashes grow only then (the user's with the markets they
  -- trade, the market's with its holders), and only on every HOLDING_CHECK_EVERY-th trade (lib.lua).
  if held == n_shares and side == 'BUY' and (last_id + 1) % HOLDING_CHECK_EVERY == 0 then
    keep_hashed(m.pos, m.cost)
    keep_hashed(user_pos, user_cost)
  end
  last_id = last_id + 1
  local trade_id = int_str(last_id * id_stride + id_offset)
  local prices, avg, fp, idem = o.prices, o.avg_price, o.request_hash, o.idempotency_key
  local fields, price_fields
  if m.yes_no then
    -- The YES/NO market's fields, as they always were, in one table (this is the hot path).
    local comma = string.find(prices, ',', 1, true)
    local py, pn = string.sub(prices, 1, comma - 1), string.sub(prices, comma + 1)
    local yes, no = fmt6(m.q.YES), fmt6(m.q.NO)
    fields = {'type', 'TradeExecuted', 'ts', ms, 'trade_id', trade_id,
      'market_id', m.id, 'user_id', user_id, 'side', side, 'outcome', outcome,
      'shares', fmt6(shares), 'cost', fmt6(cost), 'price_yes', py, 'price_no', pn,
      'yes_shares', yes, 'no_shares', no, 'pool', fmt6(m.pool),
      'available', fmt6(available), 'position', fmt6(position), 'net_cost', fmt6(net_cost), 'avg_price', avg}
    price_fields = {'price_yes', py, 'price_no', pn, 'yes_shares', yes, 'no_shares', no,
      'prices', '{"YES":"' .. py .. '","NO":"' .. pn .. '"}', 'shares', '{"YES":"' .. yes .. '","NO":"' .. no .. '"}'}
  else
    local price_list, totals = {}, {}
    for p in string.gmatch(prices, '[^,]+') do price_list[#price_list + 1] = p end
    for i, label in ipairs(m.labels) do totals[i] = fmt6(m.q[label]) end
    local price_json, totals_json = decimal_json(m.labels, price_list), decimal_json(m.labels, totals)
    fields = {'type', 'TradeExecuted', 'ts', ms, 'trade_id', trade_id,
      'market_id', m.id, 'user_id', user_id, 'side', side, 'outcome', outcome,
      'shares', fmt6(shares), 'cost', fmt6(cost), 'prices', price_json, 'outstanding', totals_json,
      'pool', fmt6(m.pool), 'available', fmt6(available), 'position', fmt6(position),
      'net_cost', fmt6(net_cost), 'avg_price', avg}
    price_fields = {'prices', price_json, 'shares', totals_json}
  end
  if fp ~= '' then
    fields[#fields + 1] = 'idempotency_key'
    fields[#fields + 1] = idem
    fields[#fields + 1] = 'request_hash'
    fields[#fields + 1] = fp
  end
  local trade_event = redis.call('XADD', events, '*', unpack(fields))
  -- The hot set evicts a user only once the persister has committed last_event.
  redis.call('HSET', user_key, 'available', available, 'last_event', trade_event)
  m.last_event = redis.call('XADD', events, '*', 'type', 'PriceUpdated', 'ts', ms, 'market_id', m.id,
    unpack(price_fields))
  m.last_trade = trade_id
  if fp ~= '' then
    -- The stored reply: engine/wire.py's StoredReply (same fields, same order).
    redis.call('SET', idem_key, table.concat({fp, trade_id, side,
      outcome, shares, cost, avg, prices, ms, m.last_event}, '|'), 'EX', ttl)
  end
  return {'OK', trade_id, available, position, m.last_event}
end

-- One market's batch: check its state once, then each order in turn. Its keys start at KEYS[k],
-- its arguments at ARGV[a].
local function market_batch(k, a, ms)
  local m = {key = KEYS[k], pos = KEYS[k + 1], cost = KEYS[k + 2], id = ARGV[a]}
  local expected, n = ARGV[a + 1], tonumber(ARGV[a + 2])
  local st = redis.call('HMGET', m.key, 'status', 'version', 'q_yes', 'q_no', 'pool', 'close_ms', 'outcomes')
  if not st[1] then return {'NOT_FOUND'}, n end
  -- A YES/NO market's totals came with the HMGET; another market's are read label by label.
  local totals
  m.yes_no = not st[7]
  if m.yes_no then
    m.labels, totals = YES_NO, {st[3], st[4]}
  else
    m.labels = labels_from(st[7])
    local names = {}
    for i, label in ipairs(m.labels) do names[i] = q_field(label) end
    totals = redis.call('HMGET', m.key, unpack(names))
  end
  local totals_text = table.concat(totals, ':')
  -- The close time is checked against this call's clock before anything else: every order of
  -- this call runs at `ms`, so none executes at or after the close time, whenever it was queued.
  -- No order can execute then, so the state check below has nothing left to protect.
  local closed_now = st[1] == 'OPEN' and close_due(st[6], ms)
  if closed_now then
    close_market_now(m.key, events, dirty, m.id, ms, 'close_time')
    st[1], st[2] = 'CLOSED', redis.call('HGET', m.key, 'version')
  elseif st[2] .. ':' .. totals_text ~= expected then
    return {'CONFLICT', st[2], st[1], st[5], totals_text}, n
  end
  local open = st[1] == 'OPEN'
  m.q, m.pool = {}, tonumber(st[5])
  for i, label in ipairs(m.labels) do m.q[label] = tonumber(totals[i]) end
  local results, applied, broken = {}, 0, false
  for i = 1, n do
    local o = read_order_line(ARGV[a + 2 + i], order)
    local fp, rejection = o.request_hash, o.rejection
    local ok = k + 4 * i - 1  -- this order's first key
    local user_key, user_pos, user_cost, idem_key = KEYS[ok], KEYS[ok + 1], KEYS[ok + 2], KEYS[ok + 3]
    local r
    if broken then
      r = {'SKIPPED'}
    else
      if fp ~= '' then
        local prev = redis.call('GET', idem_key)
        if prev then
          if string.sub(prev, 1, #fp + 1) == fp .. '|' then
            r = {'REPLAY', prev}
          else
            r = {'IDEMPOTENCY_KEY_REUSED', 'this Idempotency-Key was already used with a different request'}
          end
        end
      end
      if not r then
        local held = o.sell_all and (redis.call('HGET', m.pos, o.user_id .. ':' .. o.outcome) or '0')
        if not open then
          r = {'MARKET_NOT_OPEN', 'market is ' .. st[1]}
        elseif held and held ~= o.shares then
          -- "all" is the holding now, whatever the engine last saw: its price and any rejection
          -- of it (none held, slippage) hold only for the amount it was priced for.
          r = {'HELD', held}
        elseif rejection ~= '' then
          local sp = string.find(rejection, ' ', 1, true) or (#rejection + 1)
          r = {string.sub(rejection, 1, sp - 1), string.sub(rejection, sp + 1)}
        else
          r = apply(m, o, user_key, user_pos, user_cost, idem_key, ms)
        end
      end
      -- Later orders were priced as if this one executed: if it did not, stop.
      if r[1] ~= 'OK' and open and rejection == '' then broken = true end
    end
    if r[1] == 'OK' then applied = applied + 1 end
    results[i] = r
  end
  local version, pool = st[2], int_str(m.pool)
  if applied > 0 then
    for i, label in ipairs(m.labels) do totals[i] = int_str(m.q[label]) end
    totals_text = table.concat(totals, ':')
    -- touch_market's writes folded into one HSET (the version is known: it was just compared).
    local before = tonumber(version)
    version = int_str(before + applied)
    local writes = {'pool', pool, 'last_trade_id', m.last_trade, 'version', version, 'updated_ms', ms,
      'last_event', m.last_event}
    for i, label in ipairs(m.labels) do
      writes[#writes + 1] = q_field(label)
      writes[#writes + 1] = totals[i]
    end
    redis.call('HSET', m.key, unpack(writes))
    -- A hash table from its creation; after a restart, turned back now and then (lib.lua's MARKET_RECHECK).
    if math.floor(before / MARKET_RECHECK) ~= math.floor((before + applied) / MARKET_RECHECK) then
      to_hashtable(m.key)
    end
    -- A market newly dirty may take the set past the listpack's size (lib.lua's keep_sorted).
    if redis.call('ZADD', dirty, ms, m.id) == 1 then keep_sorted(dirty) end
  end
  return {'DONE', version, st[1], pool, totals_text, ms, results}, n
end

local ms = now_ms()
local replies, a, k = {}, 4, 4
while a <= #ARGV do
  local reply, n = market_batch(k, a, ms)
  replies[#replies + 1] = reply
  a = a + 3 + n
  k = k + 3 + 4 * n
end
if last_id ~= first_id then redis.call('SET', seq, int_str(last_id)) end
return replies
