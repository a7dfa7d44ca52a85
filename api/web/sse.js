// Live events. The public stream is an EventSource (no key needed). The user's own stream needs the
// key, and EventSource cannot send headers, so it is read with fetch() and parsed here: the key goes
// in the Authorization header, never in the URL.

const PUBLIC_TYPES = ['MarketCreated', 'MarketOpened', 'MarketClosed', 'MarketResolved', 'MarketSettled',
  'PriceUpdated', 'TradeExecuted'];
const FIRST_RETRY_MS = 500;
const LAST_RETRY_MS = 10_000;

function pause(ms) {
  return new Promise((resolve) => { setTimeout(resolve, ms); });
}

/**
 * Subscribe to /v1/events. `onEvent(type, data)` per event; `onState(state)` with 'live',
 * 'reconnecting' or 'gap' (entries were missed: the caller reloads what it shows). Returns a stop function.
 */
export function publicStream(onEvent, onState) {
  let source = null;
  let lastId = '';
  let stopped = false;
  let delay = FIRST_RETRY_MS;

  const open = () => {
    // After a refused connection (503 at capacity) EventSource gives up; reopen resuming by `after`.
    source = new EventSource(lastId ? `/v1/events?after=${encodeURIComponent(lastId)}` : '/v1/events');
    source.onopen = () => { delay = FIRST_RETRY_MS; onState('live'); };
    source.onerror = () => {
      if (stopped) return;
      onState('reconnecting');
      if (source.readyState === EventSource.CLOSED) {
        setTimeout(() => { if (!stopped) open(); }, delay);
        delay = Math.min(delay * 2, LAST_RETRY_MS);
      }
    };
    for (const type of PUBLIC_TYPES) {
      source.addEventListener(type, (message) => {
        lastId = message.lastEventId || lastId;
        onEvent(type, JSON.parse(message.data));
      });
    }
    source.addEventListener('gap', () => onState('gap'));
  };
  open();
  return () => { stopped = true; source.close(); };
}

/** Split a text stream of SSE into frames {id, event, data}; comments and heartbeats are skipped. */
async function readFrames(body, onFrame) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end = buffer.indexOf('\n\n');
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const frame = { id: null, event: 'message', data: [] };
      for (const line of block.split('\n')) {
        if (line === '' || line.startsWith(':')) continue;
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let text = colon < 0 ? '' : line.slice(colon + 1);
        if (text.startsWith(' ')) text = text.slice(1);
        if (field === 'data') frame.data.push(text);
        else if (field === 'id') frame.id = text;
        else if (field === 'event') frame.event = text;
      }
      if (frame.data.length > 0) onFrame({ id: frame.id, event: frame.event, data: frame.data.join('\n') });
      end = buffer.indexOf('\n\n');
    }
  }
}

/**
 * Subscribe to /v1/me/events with `key`; resumes with Last-Event-ID after a drop. `onState` gets
 * 'live', 'reconnecting', or 'refused' with the API's error (a revoked key: no retry). Returns a stop function.
 */
export function privateStream(key, onEvent, onState) {
  let stopped = false;
  let controller = null;
  let lastId = null;

  const run = async () => {
    let delay = FIRST_RETRY_MS;
    while (!stopped) {
      controller = new AbortController();
      const headers = { Authorization: `Bearer ${key}`, Accept: 'text/event-stream' };
      if (lastId) headers['Last-Event-ID'] = lastId;
      try {
        const response = await fetch('/v1/me/events', { headers, signal: controller.signal, cache: 'no-store',
          credentials: 'omit' });
        if (response.status === 401 || response.status === 403) {
          const body = await response.json().catch(() => null);
          onState('refused', body?.error ?? { code: `HTTP_${response.status}`, message: 'refused' });
          return;
        }
        if (response.ok && response.body) {
          onState('live');
          delay = FIRST_RETRY_MS;
          await readFrames(response.body, (frame) => {
            if (frame.id) lastId = frame.id;
            if (frame.event === 'gap') onState('gap');
            else if (frame.event !== 'error') onEvent(frame.event, JSON.parse(frame.data));
          });
        }
      } catch {
        // a dropped connection or an abort: retried below unless stopped
      }
      if (stopped) return;
      onState('reconnecting');
      await pause(delay);
      delay = Math.min(delay * 2, LAST_RETRY_MS);
    }
  };
  run();
  return () => { stopped = true; controller?.abort(); };
}
