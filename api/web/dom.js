// Building the page from API data: text only. Every value from the API goes in through textContent
// (or an attribute value), never through innerHTML, so a market named `<img onerror=…>` stays text.

/** document.getElementById, failing loudly when the page and the script disagree. */
export function $(id) {
  const node = document.getElementById(id);
  if (node === null) throw new Error(`#${id} is missing from the page`);
  return node;
}

/**
 * A new element: `props.text` becomes its textContent, `props.class` its class, `props.data` its
 * dataset, `on<event>` a listener, anything else an attribute; children are nodes or strings (text).
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'text') node.textContent = String(value);
    else if (key === 'class') node.className = value;
    else if (key === 'data') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, String(value));
  }
  node.append(...children.filter((child) => child !== null && child !== undefined));
  return node;
}

export function setText(id, text) {
  $(id).textContent = String(text);
}

/** Show `text` in a message element (kind: ok, error, info), or hide it when text is empty. */
export function say(id, text, kind = 'info') {
  const node = $(id);
  node.textContent = text;
  node.dataset.kind = kind;
  node.hidden = !text;
}

/** Calls `fn` once, `ms` after the last of a burst of calls. */
export function debounce(fn, ms) {
  let timer = null;
  return (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
}

/** Calls `fn` at most once per `ms` while calls keep coming (the last call is never lost). */
export function throttle(fn, ms) {
  let timer = null;
  let queued = null;
  return (...args) => {
    queued = args;
    if (timer !== null) return;
    timer = setTimeout(() => {
      timer = null;
      const latest = queued;
      queued = null;
      fn(...latest);
    }, ms);
  };
}
