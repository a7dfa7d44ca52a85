// Money, shares and prices arrive as decimal strings with 6 decimals; arithmetic on them is done on
// BigInt micro-units (never on floats), as the API does. Floats appear only for drawing the chart.

export const MICRO = 1_000_000n;
const REQUEST_NUMBER = /^[0-9]+(\.[0-9]{1,6})?$/;
const ANY_DECIMAL = /^-?[0-9]+(\.[0-9]+)?$/;

/** True when `text` is a number the API accepts in a request (at most 6 decimals, no sign). */
export function isRequestNumber(text) {
  return REQUEST_NUMBER.test(text);
}

/** "12.5" or "-0.000001" -> micro-units as a BigInt (extra decimals are cut, not rounded). */
export function toMicro(text) {
  const value = String(text);
  if (!ANY_DECIMAL.test(value)) throw new RangeError(`not a decimal: ${value}`);
  const negative = value.startsWith('-');
  const [whole, fraction = ''] = (negative ? value.slice(1) : value).split('.');
  const micro = BigInt(whole) * MICRO + BigInt((fraction + '000000').slice(0, 6));
  return negative ? -micro : micro;
}

/** Micro-units -> "12.500000". */
export function fromMicro(micro) {
  const negative = micro < 0n;
  const size = negative ? -micro : micro;
  return `${negative ? '-' : ''}${size / MICRO}.${(size % MICRO).toString().padStart(6, '0')}`;
}

/** ceil(a * n / d) for a, n >= 0 and d > 0. */
export function mulDivCeil(a, n, d) {
  return (a * n + d - 1n) / d;
}

/** floor(a * n / d) for a, n >= 0 and d > 0. */
export function mulDivFloor(a, n, d) {
  return (a * n) / d;
}

/** cost / shares as a 6-decimal string, rounded half up (display only). */
export function averagePrice(cost, shares) {
  const c = toMicro(cost);
  const s = toMicro(shares);
  if (s === 0n) return '—';
  return fromMicro((2n * c * MICRO + s) / (2n * s));
}

/** A price "0.512345" as "51.23%". */
export function percent(price) {
  const micro = toMicro(price);
  const hundredths = (micro + 50n) / 100n; // basis points of 1, rounded half up
  return `${hundredths / 100n}.${(hundredths % 100n).toString().padStart(2, '0')}%`;
}

/** "12.500000" as "12.50" for dense tables (the exact value stays in the element's title). */
export function short(text, places = 2) {
  const micro = toMicro(text);
  const step = 10n ** BigInt(6 - places);
  const negative = micro < 0n;
  const rounded = ((negative ? -micro : micro) + step / 2n) / step;
  const scale = 10n ** BigInt(places);
  const body = places === 0 ? `${rounded}` : `${rounded / scale}.${(rounded % scale).toString().padStart(places, '0')}`;
  return negative && rounded !== 0n ? `-${body}` : body;
}
