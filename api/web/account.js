// The user's key, balance and positions. The key is kept in this tab's sessionStorage only and sent
// only as the Authorization header; balance and positions follow /v1/me/events live.

import { get } from './api.js';
import { $, el, say, setText, throttle } from './dom.js';
import { privateStream } from './sse.js';
import { emit, on, priceOf, state } from './store.js';
import { fromMicro, percent, short, toMicro } from './units.js';

const STORAGE_KEY = 'predmarket.apiKey';
const VALUE_DELAY_MS = 300;
const STATES = { live: 'you: live', reconnecting: 'you: reconnecting…', gap: 'you: resyncing…', connecting: '…' };
let account = null; // GET /v1/me, kept current from the private stream
let stopStream = null;
// GET /v1/me/positions (with net cost, value and P&L) where the server offers it; null: not (yet) offered.
let detailed = null;
let positionsRoute = true; // false once the server answered 404: a server without it is not asked again
const values = new Map(); // fallback: `${market}:${outcome}` -> what selling now returns (a quote)

const positionKey = (p) => `${p.market_id}:${p.outcome}`;

function positions() {
  return detailed ?? account?.positions ?? [];
}

function holds(marketId) {
  return positions().some((p) => p.market_id === marketId);
}

function cell(text, title, extra = '') {
  return el('td', { class: `num ${extra}`.trim(), text, title });
}

function signClass(text) {
  return text && text.startsWith('-') ? 'loss' : 'gain';
}

function valueOf(p) {
  return p.value ?? values.get(positionKey(p)) ?? null;
}

/** The server's P&L, or value − net cost where the account carries net_cost, or null. */
function pnlOf(p) {
  if (p.pnl ?? p.realized_pnl) return p.pnl ?? p.realized_pnl;
  const value = valueOf(p);
  return value !== null && p.net_cost !== undefined ? fromMicro(toMicro(value) - toMicro(p.net_cost)) : null;
}

function positionRow(p) {
  const market = state.markets.get(p.market_id);
  const price = p.price ?? (market ? priceOf(market, p.outcome) : null);
  const value = valueOf(p);
  const pnl = pnlOf(p);
  return el('tr', { data: { marketId: p.market_id, outcome: p.outcome } },
    el('td', { class: 'market-cell', text: market ? market.name : p.market_id, title: p.market_id }),
    el('td', { text: p.outcome }),
    cell(p.shares, p.shares, 'shares'),
    cell(price ? percent(price) : '—', price ?? ''),
    cell(value ? short(value) : '—', value ?? '', 'value'),
    cell(pnl ? short(pnl) : '—', pnl ?? '', pnl ? `pnl ${signClass(pnl)}` : 'pnl'));
}

function total(field) {
  const items = positions().map(field === 'value' ? valueOf : pnlOf);
  if (items.length === 0 || items.some((v) => v === undefined || v === null)) return '';
  return fromMicro(items.reduce((sum, v) => sum + toMicro(v), 0n));
}

function renderPositions() {
  const rows = [...positions()].sort((a, b) => a.market_id.localeCompare(b.market_id) || a.outcome.localeCompare(b.outcome));
  $('positions').tBodies[0].replaceChildren(...rows.map(positionRow));
  const value = total('value');
  const pnl = total('pnl');
  setText('positions-value', value ? short(value) : '');
  setText('positions-pnl', pnl ? short(pnl) : '');
  let note = '';
  if (!account) note = 'Paste an API key to see your balance and positions.';
  else if (rows.length === 0) note = 'No positions yet.';
  else if (detailed === null && rows.some((p) => pnlOf(p) === null)) {
    note = 'Value: what selling the whole position now returns (a live quote). P&L needs the server\'s /v1/me/positions, '
      + (positionsRoute ? 'which did not answer; asked again with the next event.' : 'which this server does not offer yet.');
  }
  setText('positions-note', note);
}

function renderAccount() {
  setText('username', account.username);
  setText('balance', account.available);
  $('balance').title = `locked ${account.locked}`;
  renderPositions();
}

/** Values of the positions: the server's P&L view when it has one, else one SELL quote per position. */
async function refreshValues() {
  if (!account) return;
  const key = state.key;
  if (positionsRoute) {
    try {
      const answer = await get('/v1/me/positions', { key });
      if (key !== state.key) return;
      detailed = answer.positions;
      renderPositions();
      return;
    } catch (error) {
      if (key !== state.key) return;
      // 404: a server without the route, not asked again. Any other failure: this round shows the
      // account's own positions valued by quotes, and the next event asks again.
      if (error.status === 404) positionsRoute = false;
      detailed = null;
    }
  }
  await Promise.all((account?.positions ?? []).map(async (p) => {
    try {
      const quote = await get(`/v1/markets/${encodeURIComponent(p.market_id)}/quote`,
        { params: { side: 'SELL', outcome: p.outcome, shares: p.shares } });
      values.set(positionKey(p), quote.cost);
    } catch {
      values.delete(positionKey(p)); // not OPEN: no price to sell at
    }
  }));
  if (key === state.key) renderPositions();
}

const refreshSoon = throttle(refreshValues, VALUE_DELAY_MS);

async function reloadAccount() {
  try {
    account = await get('/v1/me', { key: state.key });
    renderAccount();
    refreshSoon();
  } catch {
    // the stream's next state change retries
  }
}

/** A private TradeExecuted carries the user's new balance and the position's new size. */
function applyTrade(data) {
  account.available = data.available;
  if (data.position !== undefined) {
    const rest = account.positions.filter((p) => !(p.market_id === data.market_id && p.outcome === data.outcome));
    if (toMicro(data.position) > 0n) rest.push({ market_id: data.market_id, outcome: data.outcome, shares: data.position });
    account.positions = rest;
    if (detailed !== null) {
      const row = detailed.find((p) => p.market_id === data.market_id && p.outcome === data.outcome);
      if (row) row.shares = data.position; // the rest of the row follows from the refresh below
    }
  }
  renderAccount();
  refreshSoon();
}

function onPrivateEvent(type, data) {
  if (!account) return;
  if (type === 'TradeExecuted' && data.user_id === account.user_id) applyTrade(data);
  else if ((type === 'Deposit' || type === 'Withdrawal') && data.available !== undefined) {
    account.available = data.available;
    renderAccount();
  } else if (type === 'Payout' || type === 'Refund') reloadAccount();
}

function onPrivateState(kind, error) {
  const node = $('private-status');
  if (kind === 'refused') {
    forget();
    say('key-message', `The key was refused: ${error.code}: ${error.message}`, 'error');
    return;
  }
  node.dataset.state = kind;
  node.textContent = STATES[kind] ?? kind;
  if (kind === 'gap') reloadAccount();
}

function forget() {
  stopStream?.();
  stopStream = null;
  sessionStorage.removeItem(STORAGE_KEY);
  state.key = null;
  account = null;
  detailed = null;
  values.clear();
  $('key-form').hidden = false;
  $('account').hidden = true;
  say('key-message', '');
  renderPositions();
  emit('key', false);
}

async function useKey(key, restoring) {
  if (!key) {
    say('key-message', 'Paste an API key first.', 'error');
    return;
  }
  try {
    account = await get('/v1/me', { key });
  } catch (error) {
    if (restoring) sessionStorage.removeItem(STORAGE_KEY);
    say('key-message', `That key cannot trade: ${error.text ?? String(error)}`, 'error');
    return;
  }
  state.key = key;
  sessionStorage.setItem(STORAGE_KEY, key);
  $('api-key').value = '';
  $('key-form').hidden = true;
  $('account').hidden = false;
  say('key-message', '');
  const node = $('private-status');
  node.dataset.state = 'connecting';
  node.textContent = STATES.connecting;
  renderAccount();
  stopStream?.();
  stopStream = privateStream(key, onPrivateEvent, onPrivateState);
  refreshValues();
  emit('key', true);
}

export function initAccount() {
  $('key-form').addEventListener('submit', (event) => {
    event.preventDefault();
    useKey($('api-key').value.trim(), false);
  });
  $('key-forget').addEventListener('click', forget);
  on('market', (market) => {
    if (account && holds(market.market_id)) {
      renderPositions();
      refreshSoon();
    }
  });
  const saved = sessionStorage.getItem(STORAGE_KEY);
  if (saved) useKey(saved, true);
}
