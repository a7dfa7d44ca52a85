// The page's entry point: the public stream first (so nothing is missed while the list loads), then the
// markets, the ticket and the account.

import { initAccount } from './account.js';
import { $ } from './dom.js';
import { initMarkets, loadMarkets, onPublicEvent } from './markets.js';
import { publicStream } from './sse.js';
import { initTicket } from './ticket.js';

const LABELS = { live: 'live', reconnecting: 'reconnecting…', gap: 'resyncing…' };

function onStreamState(kind) {
  const node = $('stream-status');
  const before = node.dataset.state;
  node.dataset.state = kind;
  node.textContent = LABELS[kind] ?? kind;
  // Back after a drop, or entries were trimmed: what is shown may be stale, so load it again.
  if (kind === 'gap' || (kind === 'live' && before === 'reconnecting')) loadMarkets();
}

initMarkets();
initTicket();
publicStream(onPublicEvent, onStreamState);
loadMarkets();
initAccount();
