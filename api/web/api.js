// The API client: same origin only, the key only ever in the Authorization header.

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }

  /** "INSUFFICIENT_FUNDS: balance 3.000000 is below the cost 5.120000" */
  get text() {
    return `${this.code}: ${this.message}`;
  }
}

/** Any random key of 128 bits as hex (crypto.randomUUID needs a secure context; this does not). */
export function randomKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
}

/**
 * One request; resolves with the JSON body, rejects with an ApiError carrying the error body's code and
 * message (or NETWORK / HTTP_<status> when there is no such body).
 */
export async function call(method, path, { key, body, params, headers } = {}) {
  const url = new URL(path, window.location.origin);
  for (const [name, value] of Object.entries(params ?? {})) url.searchParams.set(name, value);
  const init = { method, cache: 'no-store', credentials: 'omit', headers: { Accept: 'application/json', ...headers } };
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(url, init);
  } catch {
    throw new ApiError(0, 'NETWORK', 'the API cannot be reached');
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && typeof data.error === 'object' ? data.error : null;
    throw new ApiError(response.status, error?.code ?? `HTTP_${response.status}`,
      error?.message ?? (response.statusText || 'request failed'));
  }
  return data;
}

export const get = (path, options) => call('GET', path, options);
export const post = (path, options) => call('POST', path, options);
