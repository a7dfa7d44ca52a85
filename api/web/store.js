// What the page knows: the markets (kept current from /v1/events), the market on show, the account.

export const state = {
  markets: new Map(), // market_id -> the API's market object, prices updated live
  selected: null, // market_id on show, or null
  key: null, // the API key of this tab (sessionStorage), or null
};

/** Page-wide notifications: 'market' (a market changed: detail = market), 'selected' (detail = market). */
export const bus = new EventTarget();

export function emit(name, detail) {
  bus.dispatchEvent(new CustomEvent(name, { detail }));
}

export function on(name, handler) {
  bus.addEventListener(name, (event) => handler(event.detail));
}

/** A market's outcomes as [{outcome, price, shares}], for YES/NO markets and markets with more outcomes. */
export function outcomesOf(market) {
  if (Array.isArray(market.outcomes) && market.outcomes.length > 0) return market.outcomes;
  return [
    { outcome: 'YES', price: market.price_yes, shares: market.yes_shares },
    { outcome: 'NO', price: market.price_no, shares: market.no_shares },
  ];
}

/** The price (decimal string) of one outcome now, or null. */
export function priceOf(market, outcome) {
  const found = outcomesOf(market).find((o) => o.outcome === outcome);
  return found ? found.price : null;
}

function parseMap(text) {
  if (typeof text !== 'string') return text ?? null;
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** Apply a PriceUpdated or TradeExecuted event's prices to `market` (in place). */
export function applyPrices(market, data) {
  const prices = parseMap(data.prices);
  const shares = parseMap(data.shares);
  if (data.price_yes !== undefined) {
    market.price_yes = data.price_yes;
    market.price_no = data.price_no;
  }
  if (data.yes_shares !== undefined) {
    market.yes_shares = data.yes_shares;
    market.no_shares = data.no_shares;
  }
  if (Array.isArray(market.outcomes)) {
    for (const entry of market.outcomes) {
      if (prices && prices[entry.outcome] !== undefined) entry.price = prices[entry.outcome];
      else if (entry.outcome === 'YES' && data.price_yes !== undefined) entry.price = data.price_yes;
      else if (entry.outcome === 'NO' && data.price_no !== undefined) entry.price = data.price_no;
      if (shares && shares[entry.outcome] !== undefined) entry.shares = shares[entry.outcome];
    }
  }
  if (data.pool !== undefined) market.pool = data.pool;
}

/** Event time: an event's `ts` (ms) or an object's RFC 3339 `created_at`, in seconds. */
export function secondsOf(item) {
  if (item.ts !== undefined) return Number(item.ts) / 1000;
  return Date.parse(item.created_at) / 1000;
}
