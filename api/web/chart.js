// The price chart: one line of an outcome's price over time, drawn by uPlot (vendor/, loaded before
// this module by a deferred classic script). Prices are drawn as floats: display only.

const HEIGHT = 240;
/** A long session keeps the newest points only. */
const MAX_POINTS = 5000;
const COLOURS = ['#16a34a', '#dc2626', '#2563eb', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

export class PriceChart {
  constructor(container) {
    this.container = container;
    this.xs = [];
    this.ys = [];
    this.label = '';
    this.plot = null;
    this.drawing = false;
    new ResizeObserver(() => this.plot?.setSize(this.size())).observe(container);
  }

  size() {
    return { width: Math.max(this.container.clientWidth, 200), height: HEIGHT };
  }

  /** Replace the line: `points` are [seconds, price] pairs in any order; `colour` picks the line's colour. */
  reset(points, label, colour = 0) {
    const sorted = [...points].sort((a, b) => a[0] - b[0]);
    this.xs = sorted.map((p) => p[0]);
    this.ys = sorted.map((p) => p[1]);
    this.label = label;
    this.plot?.destroy();
    this.plot = null;
    this.container.replaceChildren();
    if (typeof window.uPlot !== 'function') {
      this.container.textContent = 'chart library not loaded';
      return;
    }
    const stroke = COLOURS[colour % COLOURS.length];
    const percent = (value) => (value == null ? '—' : `${(value * 100).toFixed(1)}%`);
    this.plot = new window.uPlot({
      ...this.size(),
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true }, y: { range: [0, 1] } },
      series: [
        {},
        { label, stroke, width: 2, value: (_, v) => percent(v), paths: window.uPlot.paths.stepped({ align: 1 }) },
      ],
      axes: [{}, { values: (_, values) => values.map((v) => `${Math.round(v * 100)}%`) }],
    }, [this.xs, this.ys], this.container);
    this.container.dataset.points = String(this.xs.length);
  }

  /** Add one point (a trade's new price); a point older than the last is drawn at the last time. */
  add(seconds, price) {
    const last = this.xs.length ? this.xs[this.xs.length - 1] : seconds;
    this.xs.push(Math.max(seconds, last));
    this.ys.push(price);
    if (this.xs.length > MAX_POINTS) {
      this.xs.splice(0, this.xs.length - MAX_POINTS);
      this.ys.splice(0, this.ys.length - MAX_POINTS);
    }
    this.container.dataset.points = String(this.xs.length);
    // One redraw per frame however many trades arrive in it.
    if (!this.drawing) {
      this.drawing = true;
      requestAnimationFrame(() => {
        this.drawing = false;
        this.plot?.setData([this.xs, this.ys]);
      });
    }
  }
}
