// The trade ticket: buy or sell, by shares or by amount, a live quote, a slippage limit from that quote.

import { get, post, randomKey } from './api.js';
import { $, debounce, el, say, setText, throttle } from './dom.js';
import { chartFollows } from './markets.js';
import { on, outcomesOf, state } from './store.js';
import { fromMicro, isRequestNumber, mulDivCeil, mulDivFloor, percent, toMicro } from './units.js';

const QUOTE_DELAY_MS = 200;
/** Slippage is a percentage: micro-units of a percent over this denominator. */
const HUNDRED_PERCENT = 100n * 1_000_000n;
let lastQuote = null; // {order, quote}: what the submit's limit is computed from
let quoteSeq = 0; // a newer quote request makes an older one's answer stale
let sending = false;

function order() {
  const fields = $('ticket').elements;
  const side = fields.side.value;
  return {
    side,
    by: side === 'SELL' ? 'shares' : fields.by.value,
    outcome: $('ticket-outcome').value,
    quantity: $('ticket-quantity').value.trim(),
    slippage: $('ticket-slippage').value.trim(),
  };
}

function sameOrder(a, b) {
  return a.side === b.side && a.by === b.by && a.outcome === b.outcome && a.quantity === b.quantity;
}

function market() {
  return state.selected ? state.markets.get(state.selected) : undefined;
}

/** The order's slippage limit from its quote: {max_cost} on a BUY by shares, {min_proceeds} on a SELL. */
function limitOf(o, quote) {
  if (!isRequestNumber(o.slippage)) return { error: 'Slippage limit: a percentage like 1 or 0.5.' };
  const slip = toMicro(o.slippage) > HUNDRED_PERCENT ? HUNDRED_PERCENT : toMicro(o.slippage);
  const cost = toMicro(quote.cost);
  if (o.side === 'SELL') return { min_proceeds: fromMicro(mulDivFloor(cost, HUNDRED_PERCENT - slip, HUNDRED_PERCENT)) };
  if (o.by === 'shares') return { max_cost: fromMicro(mulDivCeil(cost, HUNDRED_PERCENT + slip, HUNDRED_PERCENT)) };
  return {}; // by amount: the cost never exceeds the amount given
}

function describeLimit(limit) {
  if (limit.error) return limit.error;
  if (limit.max_cost) return `limit: pay at most ${limit.max_cost}`;
  if (limit.min_proceeds) return `limit: receive at least ${limit.min_proceeds}`;
  return 'the cost never exceeds the amount';
}

function showQuote(kind, ...lines) {
  const node = $('quote');
  node.dataset.state = kind;
  node.replaceChildren(...lines.map((line) => el('span', { text: line })));
}

function renderQuote(o, quote) {
  const action = o.side === 'BUY' ? 'cost' : 'proceeds';
  const after = quote.prices?.[o.outcome] ?? outcomesOf(quote).find((x) => x.outcome === o.outcome)?.price;
  const lines = [`${quote.shares} ${o.outcome} shares`, `${action} ${quote.cost} (avg ${quote.avg_price})`];
  if (after) lines.push(`${o.outcome} after: ${percent(after)}`);
  lines.push(describeLimit(limitOf(o, quote)));
  showQuote('ok', ...lines);
}

async function requote() {
  const seq = ++quoteSeq;
  const o = order();
  const current = market();
  lastQuote = null;
  if (!current || current.status !== 'OPEN') {
    showQuote('empty');
    return;
  }
  if (!isRequestNumber(o.quantity) || toMicro(o.quantity) === 0n) {
    showQuote('invalid', 'Enter a positive number with at most 6 decimals.');
    return;
  }
  try {
    const quote = await get(`/v1/markets/${encodeURIComponent(current.market_id)}/quote`,
      { params: { side: o.side, outcome: o.outcome, [o.by]: o.quantity } });
    if (seq !== quoteSeq) return;
    lastQuote = { order: o, quote };
    renderQuote(o, quote);
  } catch (error) {
    if (seq === quoteSeq) showQuote('error', error.text ?? String(error));
  }
}

const requoteSoon = debounce(requote, QUOTE_DELAY_MS); // typing: once the user pauses
const requoteOften = throttle(requote, QUOTE_DELAY_MS); // prices moving: however busy the market

function syncControls() {
  const fields = $('ticket').elements;
  const o = order();
  $('by-amount').disabled = o.side === 'SELL';
  if (o.side === 'SELL' && fields.by.value === 'amount') fields.by.value = 'shares';
  setText('quantity-label', o.by === 'amount' ? 'Amount to spend' : 'Shares');
  const current = market();
  const open = current?.status === 'OPEN';
  $('ticket-submit').textContent = `${o.side === 'BUY' ? 'Buy' : 'Sell'} ${o.outcome}`;
  $('ticket-submit').disabled = sending || !open || !state.key;
  let hint = '';
  if (current && !open) hint = `Trading is closed: this market is ${current.status}.`;
  else if (!state.key) hint = 'Paste your API key (at the top) to trade; quotes work without one.';
  setText('ticket-hint', hint);
}

function fillOutcomes(current) {
  const select = $('ticket-outcome');
  const before = select.value;
  const labels = outcomesOf(current).map((o) => o.outcome);
  select.replaceChildren(...labels.map((label) => el('option', { value: label, text: label })));
  select.value = labels.includes(before) ? before : labels[0];
}

function outcomeVerb(o) {
  return o.side === 'BUY' ? 'Bought' : 'Sold';
}

async function submit(event) {
  event.preventDefault();
  const current = market();
  if (!current || !state.key || sending) return;
  const o = order();
  if (!lastQuote || !sameOrder(lastQuote.order, o)) await requote();
  if (!lastQuote || !sameOrder(lastQuote.order, o)) {
    say('ticket-message', 'No quote for this order: see the message above.', 'error');
    return;
  }
  const limit = limitOf(o, lastQuote.quote);
  if (limit.error) {
    say('ticket-message', limit.error, 'error');
    return;
  }
  sending = true;
  syncControls();
  say('ticket-message', 'Sending…', 'info');
  try {
    const trade = await post(`/v1/markets/${encodeURIComponent(current.market_id)}/trades`, {
      key: state.key,
      headers: { 'Idempotency-Key': randomKey() },
      body: { side: o.side, outcome: o.outcome, [o.by]: o.quantity, ...limit },
    });
    say('ticket-message', `${outcomeVerb(o)} ${trade.shares} ${trade.outcome} for ${trade.cost} (avg ${trade.avg_price}), `
      + `trade ${trade.trade_id}.`, 'ok');
  } catch (error) {
    say('ticket-message', error.text ?? String(error), 'error');
  } finally {
    sending = false;
    syncControls();
    requote();
  }
}

export function initTicket() {
  const form = $('ticket');
  form.addEventListener('submit', submit);
  form.addEventListener('input', (event) => {
    if (event.target.id !== 'ticket-slippage') say('ticket-message', '');
    syncControls();
    if (event.target.id === 'ticket-slippage' && lastQuote) renderQuote(lastQuote.order, lastQuote.quote);
    else requoteSoon();
  });
  $('ticket-outcome').addEventListener('change', () => chartFollows($('ticket-outcome').value));
  on('outcome', (label) => { // a price button of the market on show
    const select = $('ticket-outcome');
    if (![...select.options].some((option) => option.value === label)) return;
    select.value = label;
    say('ticket-message', '');
    syncControls();
    requote();
    chartFollows(label);
  });
  on('selected', (current) => {
    $('ticket-panel').hidden = false;
    fillOutcomes(current);
    say('ticket-message', '');
    syncControls();
    requote();
  });
  on('market', (changed) => {
    if (changed.market_id !== state.selected) return;
    syncControls();
    requoteOften(); // the price moved: the quote follows
  });
  on('key', syncControls);
  syncControls();
}
