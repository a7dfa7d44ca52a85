// The market list (left) and the market on show (centre): prices, chart, recent trades.

import { get } from './api.js';
import { PriceChart } from './chart.js';
import { $, el, say, setText } from './dom.js';
import { applyPrices, emit, outcomesOf, priceOf, secondsOf, state } from './store.js';
import { averagePrice, percent, short } from './units.js';

const TRADE_ROWS = 50;
const CANDLE_HOURS = 12;
const STATUS_ORDER = { OPEN: 0, CLOSED: 1, CREATED: 2, RESOLVED: 3, SETTLED: 4 };
/** Outcomes take the chart's colours in turn (chart.js has as many). */
const COLOURS = 8;
let chart = null;
let chartOutcome = null;
let chartLoad = 0; // a newer load makes an older one's answer stale
let pendingPoints = null; // live points that arrive while the chart loads

// --------------------------------------------------------------------------- list

function priceChips(market) {
  return outcomesOf(market).map((o, index) => el('span', {
    class: `chip chip-${index % COLOURS}`, data: { outcome: o.outcome }, text: `${o.outcome} ${percent(o.price)}`,
  }));
}

function marketRow(market) {
  const button = el('button', { type: 'button', class: 'market-button', onclick: () => select(market.market_id) },
    el('span', { class: 'market-title', text: market.name }),
    el('span', { class: `badge badge-${market.status.toLowerCase()}`, text: market.status }),
    el('span', { class: 'chips' }, ...priceChips(market)));
  return el('li', { data: { marketId: market.market_id }, class: market.market_id === state.selected ? 'selected' : '' },
    button);
}

function ordered() {
  return [...state.markets.values()].sort((a, b) => (STATUS_ORDER[a.status] ?? 9) - (STATUS_ORDER[b.status] ?? 9)
    || a.name.localeCompare(b.name) || a.market_id.localeCompare(b.market_id));
}

function shown(market) {
  const filter = $('market-filter').value.trim().toLowerCase();
  return !filter || market.name.toLowerCase().includes(filter);
}

export function renderList() {
  const rows = ordered().filter(shown).map(marketRow);
  $('market-list').replaceChildren(...rows);
  say('markets-message', state.markets.size === 0 ? 'No markets yet.' : '');
}

/** Update one market's row in place (a row being clicked is never replaced under the pointer). */
function renderRow(market) {
  const row = $('market-list').querySelector(`li[data-market-id="${CSS.escape(market.market_id)}"]`);
  if (!row) {
    if (shown(market)) renderList(); // a new market
    return;
  }
  const badge = row.querySelector('.badge');
  if (badge.textContent !== market.status) {
    badge.textContent = market.status;
    badge.className = `badge badge-${market.status.toLowerCase()}`;
  }
  row.querySelector('.market-title').textContent = market.name;
  row.querySelector('.chips').replaceChildren(...priceChips(market));
}

export async function loadMarkets() {
  try {
    const { markets } = await get('/v1/markets');
    state.markets = new Map(markets.map((m) => [m.market_id, m]));
    renderList();
    if (state.selected && state.markets.has(state.selected)) select(state.selected);
  } catch (error) {
    say('markets-message', `Markets could not be loaded: ${error.text ?? error.message}`, 'error');
  }
}

async function refreshMarket(marketId) {
  try {
    const market = await get(`/v1/markets/${encodeURIComponent(marketId)}`);
    state.markets.set(market.market_id, market);
    renderRow(market);
    if (market.market_id === state.selected) renderHeader(market);
    emit('market', market);
  } catch {
    // the next event or a reload will bring it
  }
}

// --------------------------------------------------------------------------- market on show

function renderHeader(market) {
  setText('market-name', market.name);
  const parts = [`status ${market.status}`];
  if (market.outcome) parts.push(`outcome ${market.outcome}`);
  parts.push(`liquidity b ${short(market.liquidity_b)}`, `pool ${short(market.pool)}`);
  if (market.close_time) parts.push(`closes ${new Date(market.close_time).toLocaleString()}`);
  setText('market-meta', parts.join(' · '));
  // One button per outcome: choosing one puts it on the chart and in the ticket. Prices move often:
  // the buttons are updated in place (a button being clicked is never replaced under the pointer).
  const outcomes = outcomesOf(market);
  const buttons = [...$('market-prices').children];
  if (buttons.length !== outcomes.length || buttons.some((b, i) => b.dataset.outcome !== outcomes[i].outcome)) {
    $('market-prices').replaceChildren(...outcomes.map((o, index) => el('button', {
      type: 'button', class: `price price-${index % COLOURS}`, data: { outcome: o.outcome },
      'aria-pressed': String(o.outcome === chartOutcome), onclick: () => emit('outcome', o.outcome),
    }, el('span', { class: 'price-label', text: o.outcome }), el('span', { class: 'price-value' }))));
  }
  outcomes.forEach((o, index) => {
    const button = $('market-prices').children[index];
    button.title = o.price;
    button.querySelector('.price-value').textContent = percent(o.price);
  });
}

/** Mark the outcome the chart shows among the market's price buttons. */
function markChosen() {
  for (const button of $('market-prices').children) {
    button.setAttribute('aria-pressed', String(button.dataset.outcome === chartOutcome));
  }
}

function tradeRow(trade) {
  const time = new Date(secondsOf(trade) * 1000);
  return el('tr', { data: { tradeId: String(trade.trade_id) } },
    el('td', { text: time.toLocaleTimeString(), title: time.toISOString() }),
    el('td', { class: trade.side === 'BUY' ? 'buy' : 'sell', text: trade.side }),
    el('td', { text: trade.outcome }),
    el('td', { class: 'num', text: short(trade.shares), title: trade.shares }),
    el('td', { class: 'num', text: trade.avg_price ?? averagePrice(trade.cost, trade.shares) }),
    el('td', { class: 'num', text: short(trade.cost), title: trade.cost }));
}

/** Insert a trade in the table, newest first, once (history and live events overlap). */
function addTrade(trade) {
  const body = $('trades').tBodies[0];
  const id = BigInt(trade.trade_id);
  if (body.querySelector(`tr[data-trade-id="${id}"]`)) return;
  const after = [...body.rows].find((row) => BigInt(row.dataset.tradeId) < id);
  body.insertBefore(tradeRow(trade), after ?? null);
  while (body.rows.length > TRADE_ROWS) body.deleteRow(-1);
}

async function recentTrades(market) {
  try {
    const { trades } = await get(`/v1/markets/${encodeURIComponent(market.market_id)}/trades`,
      { params: { limit: String(TRADE_ROWS) } });
    return trades;
  } catch {
    return [];
  }
}

async function loadTrades(market) {
  $('trades').tBodies[0].replaceChildren();
  const trades = await recentTrades(market);
  if (state.selected === market.market_id) trades.forEach(addTrade);
  return trades;
}

function tradePrice(trade, outcome) {
  if (trade.prices && trade.prices[outcome] !== undefined) return trade.prices[outcome];
  if (outcome === 'YES') return trade.price_yes;
  if (outcome === 'NO') return trade.price_no;
  return null;
}

/** The trades' points: the price of `outcome` after each, oldest first. */
function tradePoints(trades, outcome) {
  return trades.map((t) => [secondsOf(t), tradePrice(t, outcome)]).filter((p) => p[1] !== null && p[1] !== undefined)
    .map(([t, p]) => [t, Number(p)]).sort((a, b) => a[0] - b[0]);
}

/**
 * The chart's history: 1-minute candles (each its open at its start and its close at its end) up to the
 * oldest of the recent trades, then the price after each recent trade. Without candles (a server
 * without the route), the recent trades alone.
 */
async function chartHistory(market, outcome, trades) {
  const end = new Date();
  const start = new Date(end.getTime() - CANDLE_HOURS * 3600 * 1000);
  const path = `/v1/markets/${encodeURIComponent(market.market_id)}/candles`;
  const [candles, recent] = await Promise.all([
    get(path, { params: { outcome, interval: '1m', start: start.toISOString(), end: end.toISOString() } })
      .then((answer) => answer.candles, () => null),
    trades,
  ]);
  const points = tradePoints(recent, outcome);
  // Fewer trades than asked for: these are all of them, so the line starts at the opening price.
  const whole = recent.length < TRADE_ROWS;
  if (candles === null) {
    return { source: 'price after each recent trade (this server has no candles)', points, whole };
  }
  const first = points.length ? points[0][0] : Infinity;
  const older = [];
  for (const candle of candles) {
    const from = Date.parse(candle.start) / 1000;
    const to = Math.min(from + 60, end.getTime() / 1000);
    if (to <= first) older.push([from, Number(candle.open)], [to, Number(candle.close)]);
  }
  return { source: `1-minute candles over ${CANDLE_HOURS} h, then each recent trade`, points: [...older, ...points],
    whole: whole && older.length === 0 };
}

async function loadChart(market, outcome, trades) {
  const load = ++chartLoad;
  pendingPoints = [];
  chartOutcome = outcome;
  markChosen();
  const { source, points, whole } = await chartHistory(market, outcome, trades);
  if (load !== chartLoad) return;
  const now = Date.now() / 1000;
  const current = Number(priceOf(market, outcome));
  // LMSR opens every outcome at the same price (1/n); with no trade yet the price has not moved since.
  const opening = points.length === 0 ? current : 1 / outcomesOf(market).length;
  if (whole || points.length === 0) points.unshift([Date.parse(market.created_at) / 1000, opening]);
  points.push([now, current]);
  const index = outcomesOf(market).findIndex((o) => o.outcome === outcome);
  chart.reset(points, outcome, Math.max(index, 0) % COLOURS);
  for (const [seconds, price] of pendingPoints) if (seconds >= now) chart.add(seconds, price);
  pendingPoints = null;
  setText('chart-source', `Chart: ${outcome} price, ${source}; live from /v1/events.`);
}

/** Show a market: header, chart and trades (the chart follows `outcome`, by default the first one). */
function show(market, outcome) {
  $('market-panel').hidden = false;
  renderHeader(market);
  const wanted = outcome ?? (outcomesOf(market).some((o) => o.outcome === chartOutcome) ? chartOutcome : null)
    ?? outcomesOf(market)[0].outcome;
  const trades = loadTrades(market);
  loadChart(market, wanted, trades);
}

export function select(marketId) {
  const market = state.markets.get(marketId);
  if (!market) return;
  state.selected = marketId;
  if (window.location.hash !== `#market=${marketId}`) window.history.replaceState(null, '', `#market=${marketId}`);
  for (const row of $('market-list').children) row.classList.toggle('selected', row.dataset.marketId === marketId);
  show(market);
  emit('selected', market);
}

/** The chart shows another outcome of the market on show (the ticket's choice). */
export function chartFollows(outcome) {
  const market = state.markets.get(state.selected);
  if (market && outcome !== chartOutcome) loadChart(market, outcome, recentTrades(market));
}

// --------------------------------------------------------------------------- live events

function onPrices(data) {
  const market = state.markets.get(data.market_id);
  if (!market) return;
  applyPrices(market, data);
  renderRow(market);
  if (market.market_id === state.selected) {
    renderHeader(market);
    const price = priceOf(market, chartOutcome);
    if (price !== null) {
      const point = [secondsOf(data), Number(price)];
      if (pendingPoints) pendingPoints.push(point);
      else chart.add(...point);
    }
  }
  emit('market', market);
}

/** One event of /v1/events. */
export function onPublicEvent(type, data) {
  if (type === 'PriceUpdated') onPrices(data);
  else if (type === 'TradeExecuted') {
    if (data.market_id === state.selected) addTrade(data);
  } else refreshMarket(data.market_id); // created, opened, closed, resolved, settled
}

export function initMarkets() {
  chart = new PriceChart($('chart'));
  $('market-filter').addEventListener('input', renderList);
  const wanted = /^#market=([A-Za-z0-9_-]{1,64})$/.exec(window.location.hash);
  if (wanted) state.selected = wanted[1];
}
